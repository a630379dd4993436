#!/usr/bin/env node
// One MQTT.js client driven by greenfly's tests: JSON commands on stdin, one per line;
// JSON events on stdout, one per line. Payloads travel as hex so any bytes survive.
//
//   {"id": 1, "op": "connect", "url": "ws://127.0.0.1:9001/mqtt", "options": {...}}
//       -> {"event": "connect", "id": 1, "sessionPresent": bool, "returnCode": n}
//   {"id": 2, "op": "subscribe", "topic": "a/#", "qos": 1}  -> {"event": "done", "id": 2, "granted": [1]}
//   {"id": 3, "op": "publish", "topic": "a/b", "payload": "6869", "qos": 1, "retain": false}
//       -> {"event": "done", "id": 3}            (after PUBACK / PUBCOMP for QoS 1 / 2)
//   {"id": 4, "op": "end"}  -> {"event": "done", "id": 4}   (DISCONNECT, then close)
// Unprompted: {"event": "message", "topic", "payload", "qos", "retain", "dup"},
//             {"event": "error", "message"}, {"event": "close"}.
// A failed command answers {"event": "done", "id": n, "error": "..."}.
'use strict';

const mqtt = require('mqtt');
const readline = require('readline');

let client = null;

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

function done(id, err, extra) {
  emit(Object.assign({ event: 'done', id }, err ? { error: String(err.message || err) } : {}, extra));
}

const ops = {
  connect(cmd) {
    const options = Object.assign({ reconnectPeriod: 0, connectTimeout: 5000 }, cmd.options);
    if (client) client.end(true);
    client = mqtt.connect(cmd.url, options);
    client.on('connect', (connack) => emit({
      event: 'connect', id: cmd.id, sessionPresent: connack.sessionPresent,
      returnCode: connack.returnCode,
    }));
    client.on('message', (topic, payload, packet) => emit({
      event: 'message', topic, payload: payload.toString('hex'), qos: packet.qos,
      retain: packet.retain, dup: packet.dup,
    }));
    client.on('error', (err) => emit({ event: 'error', message: String(err.message || err) }));
    client.on('close', () => emit({ event: 'close' }));
  },
  subscribe(cmd) {
    client.subscribe(cmd.topic, { qos: cmd.qos || 0 }, (err, granted) =>
      done(cmd.id, err, { granted: (granted || []).map((g) => g.qos) }));
  },
  publish(cmd) {
    const payload = Buffer.from(cmd.payload || '', 'hex');
    client.publish(cmd.topic, payload, { qos: cmd.qos || 0, retain: !!cmd.retain },
      (err) => done(cmd.id, err));
  },
  end(cmd) {
    client.end(false, {}, (err) => done(cmd.id, err));
  },
};

readline.createInterface({ input: process.stdin }).on('line', (line) => {
  if (!line.trim()) return;
  let cmd;
  try {
    cmd = JSON.parse(line);
    ops[cmd.op](cmd);
  } catch (err) {
    done(cmd && cmd.id, err);
  }
}).on('close', () => process.exit(0));
