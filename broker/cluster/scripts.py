"""The Lua scripts that make the cluster's multi-key changes atomic in Redis.

Fencing: a session's hash holds an epoch that every claim raises. Owner writes (`WRITE`
with any op but `q`) carry the writer's epoch and are refused when it is no longer current,
so a node that lost a session (paused, partitioned, slow to hear of the takeover) cannot
change it. Appending a message owed (`q`) is never fenced: whoever appends after a takeover
still lands in the queue the new owner reads, and learns from the answer whom to tell.
"""

from __future__ import annotations

# A persistent session ends (deleted, or a clean start): its filters out of the table of
# persistent subscriptions (every node told), its log and filter set gone, `p` 0 (the epoch
# stays: fencing only ever counts up). KEYS: s, log, f, psubs; ARGV[cid]: the client id,
# ARGV[chan]: the psubs channel.
_ENDED = """\
  for _, f in ipairs(redis.call('SMEMBERS', KEYS[3])) do
    redis.call('HDEL', KEYS[4], ARGV[{cid}] .. '\\0' .. f)
    redis.call('PUBLISH', ARGV[{chan}], '-' .. ARGV[{cid}] .. '\\0' .. f)
  end
  redis.call('DEL', KEYS[2], KEYS[3])
  redis.call('HSET', KEYS[1], 'p', '0')
"""

# KEYS: s, log, f, psubs
# ARGV: epoch ('0' for a publisher on another node), op, record, filter, client id,
#       psubs channel, queue cap (entries; 0: none)
# ops: q message owed (unfenced), o session opened, r any other record, s subscribed,
#      u unsubscribed, d session deleted
# returns: {'fenced', current epoch} | {'gone'} | {'full'} | {kind, pos, owner, epoch}
WRITE = r"""
local cur = redis.call('HGET', KEYS[1], 'epoch') or '0'
local op = ARGV[2]
if op == 'q' then
  if redis.call('HGET', KEYS[1], 'p') ~= '1' then return {'gone'} end
  local cap = tonumber(ARGV[7])
  if cap > 0 and redis.call('LLEN', KEYS[2]) >= cap then return {'full'} end
  local pos = redis.call('HINCRBY', KEYS[1], 'seq', 1)
  local kind = 'F'
  if cur == ARGV[1] then kind = 'O' end
  redis.call('RPUSH', KEYS[2], pos .. ':' .. kind .. ARGV[3])
  return {kind, pos, redis.call('HGET', KEYS[1], 'owner') or '', cur}
end
if cur ~= ARGV[1] then return {'fenced', cur} end
if op == 'd' then
""" + _ENDED.format(cid=5, chan=6) + r"""  return {'O', 0, '', cur}
end
local pos = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('RPUSH', KEYS[2], pos .. ':O' .. ARGV[3])
if op == 'o' then
  redis.call('HSET', KEYS[1], 'p', '1')
elseif op == 's' then
  redis.call('SADD', KEYS[3], ARGV[4])
  redis.call('HSET', KEYS[4], ARGV[5] .. '\0' .. ARGV[4], ARGV[3])
  redis.call('PUBLISH', ARGV[6], '+' .. ARGV[3])
elseif op == 'u' then
  redis.call('SREM', KEYS[3], ARGV[4])
  redis.call('HDEL', KEYS[4], ARGV[5] .. '\0' .. ARGV[4])
  redis.call('PUBLISH', ARGV[6], '-' .. ARGV[5] .. '\0' .. ARGV[4])
end
return {'O', pos, '', cur}
"""

# A CONNECT: this owner takes the session (epoch + 1) and reads it in the same step, so every
# append is either in what it reads or answered with this owner's name.
# KEYS: s, log, f, psubs   ARGV: owner, clean start (0/1), client id, psubs channel,
#   TTL in ms for a session that is not persistent, the epoch this owner holds it at (-1: none)
# A reconnection to the owner that holds it keeps the epoch: its own writes still in flight
# stay valid (the session object goes on), and nothing elsewhere needs fencing.
# returns: {previous owner, previous epoch, epoch, seq, persistent (0/1), entries}
CLAIM = r"""
local old = redis.call('HGET', KEYS[1], 'owner') or ''
local old_epoch = redis.call('HGET', KEYS[1], 'epoch') or '0'
local epoch = old_epoch
if old ~= ARGV[1] or old_epoch ~= ARGV[6] then
  epoch = redis.call('HINCRBY', KEYS[1], 'epoch', 1)
  redis.call('HSET', KEYS[1], 'owner', ARGV[1])
end
local entries = {}
if ARGV[2] == '1' then
""" + _ENDED.format(cid=3, chan=4) + r"""elseif redis.call('HGET', KEYS[1], 'p') == '1' then
  entries = redis.call('LRANGE', KEYS[2], 0, -1)
end
if redis.call('HGET', KEYS[1], 'p') == '1' then
  redis.call('PERSIST', KEYS[1])
else
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
end
local persistent = redis.call('HGET', KEYS[1], 'p') or '0'
return {old, old_epoch, epoch, redis.call('HGET', KEYS[1], 'seq') or '0', persistent, entries}
"""

# Who owns a session now, and whether that owner's lease is alive (before a claim: a live
# owner is asked to let go first). KEYS: s   ARGV: key prefix
# returns: {owner, alive (0/1)}
OWNER = r"""
local owner = redis.call('HGET', KEYS[1], 'owner') or ''
if owner == '' then return {'', 0} end
return {owner, redis.call('EXISTS', ARGV[1] .. '{n:' .. owner .. '}:alive')}
"""

# A dead owner's persistent session, taken by a survivor so that it expires and is owed
# messages as any offline session is; nothing if it moved on meanwhile.
# KEYS: s, log   ARGV: dead owner, new owner
# returns: false | {epoch, seq, entries}
ADOPT = r"""
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return false end
if redis.call('HGET', KEYS[1], 'p') ~= '1' then return false end
local epoch = redis.call('HINCRBY', KEYS[1], 'epoch', 1)
redis.call('HSET', KEYS[1], 'owner', ARGV[2])
return {epoch, redis.call('HGET', KEYS[1], 'seq') or '0', redis.call('LRANGE', KEYS[2], 0, -1)}
"""

# The owner rewrites its session's log as a snapshot: the entries up to `pos` (all of which
# it has applied) go, the snapshot (position 0) takes their place, later appends stay.
# KEYS: s, log   ARGV: epoch, pos, snapshot records...
COMPACT = r"""
if (redis.call('HGET', KEYS[1], 'epoch') or '0') ~= ARGV[1] then return 'fenced' end
local upto = tonumber(ARGV[2])
local tail = {}
for _, e in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
  local colon = string.find(e, ':', 1, true)
  if tonumber(string.sub(e, 1, colon - 1)) > upto then table.insert(tail, e) end
end
redis.call('DEL', KEYS[2])
for i = 3, #ARGV do redis.call('RPUSH', KEYS[2], '0:O' .. ARGV[i]) end
for _, e in ipairs(tail) do redis.call('RPUSH', KEYS[2], e) end
return 'ok'
"""

# A retained message set (blob) or cleared (empty blob), and the news of it to every node.
# KEYS: retained hash   ARGV: topic, record, channel, message to publish
RETAIN = r"""
if ARGV[2] == '' then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
"""

# A dead owner's will, taken once: only while that owner still holds the session at the
# epoch the will was stored with (a client that moved on has no will to send from here).
# KEYS: wills hash, s   ARGV: client id, dead owner
TAKE_WILL = r"""
local entry = redis.call('HGET', KEYS[1], ARGV[1])
if not entry then return false end
redis.call('HDEL', KEYS[1], ARGV[1])
local colon = string.find(entry, ':', 1, true)
local epoch = string.sub(entry, 1, colon - 1)
if redis.call('HGET', KEYS[2], 'owner') ~= ARGV[2] then return false end
if (redis.call('HGET', KEYS[2], 'epoch') or '0') ~= epoch then return false end
return string.sub(entry, colon + 1)
"""

# The lease: renewed only while this owner has not been declared dead by a reaper (its reap
# lock is taken, or it was reaped and forgotten already).
# KEYS: alive, reaping, nodes   ARGV: lease ms, owner
RENEW = r"""
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
if redis.call('HEXISTS', KEYS[3], ARGV[2]) == 0 then return 0 end
redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
return 1
"""
