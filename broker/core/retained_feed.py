"""`RetainedFeed`: the retained messages a new subscription is owed, sent at the pace the
client reads them.

A `#` subscription may match 50,000 retained messages. Put into the outbox at once they would
overrun its bound (`max_outbox_bytes`), and the QoS 0 ones past it would be dropped as if the
client read too slowly, though it had not had the time to read anything. Instead the
connection calls the feed whenever its outbox has drained below half its bound, with the
bytes it may add (`Peer.produce`): the feed delivers messages up to that budget and says
when it has sent them all. A QoS 1/2 message waits while the session's in-flight window is
full, so none goes to the queue, where `max_queued_messages` would drop it; the connection
calls the feed again after each read, when an acknowledgement may have opened the window.

Between the SUBSCRIBE and the last retained message sent, new messages on the same topics are
delivered live; a retained message replaced or cleared meanwhile is then skipped, so the
client never gets an older value after a newer one.
"""

from __future__ import annotations

from .message import Message
from .retained import RetainedMessages
from .session import Session


class RetainedFeed:
    __slots__ = ("granted_qos", "messages", "retained", "session", "sub_ids", "_at")

    def __init__(self, session: Session, retained: RetainedMessages, messages: list[Message],
                 granted_qos: int, sub_ids: tuple[int, ...]) -> None:
        self.session = session
        self.retained = retained
        self.messages = messages
        self.granted_qos = granted_qos
        self.sub_ids = sub_ids
        self._at = 0

    def __call__(self, budget: int) -> bool:
        """Deliver the next messages, about `budget` bytes of them; True once all are sent."""
        session = self.session
        messages = self.messages
        at = self._at
        while at < len(messages) and budget > 0:
            message = messages[at]
            qos = message.qos if message.qos < self.granted_qos else self.granted_qos
            if qos and session.window_full():
                break  # the next acknowledgement makes room
            at += 1
            if self.retained.get(message.topic) is not message:
                continue  # replaced or cleared since the SUBSCRIBE: the newer one went live
            session.deliver(message, qos, True, self.sub_ids)  # [MQTT-3.3.1-6] [MQTT-3.3.1-8]
            budget -= len(message.payload) + len(message.topic) + 4
        self._at = at
        if at < len(messages):
            return False
        self.messages = []
        return True
