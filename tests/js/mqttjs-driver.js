#!/usr/bin/env node
// One MQTT.js client driven by greenfly's tests: JSON commands on stdin, one per line;
// JSON events on stdout, one per line. Payloads travel as hex so any bytes survive.
//
//   {"id": 1, "op": "connect", "url": "ws://127.0.0.1:9001/mqtt", "options": {...}}
//       -> {"event": "connect", "id": 1, "sessionPresent": bool, "returnCode": n,
//           "reasonCode": n, "properties": {...}}        (MQTT 5: options.protocolVersion = 5)
//   {"id": 2, "op": "subscribe", "topic": "a/#", "qos": 1, "options": {...}}
//       -> {"event": "done", "id": 2, "granted": [1]}   (v5 subscribe options: nl, rap, rh,
//          properties; granted holds the SUBACK reason codes)
//   {"id": 3, "op": "publish", "topic": "a/b", "payload": "6869", "qos": 1, "retain": false,
//    "properties": {...}}
//       -> {"event": "done", "id": 3, "reasonCode": n}  (after PUBACK / PUBCOMP for QoS 1 / 2)
//   {"id": 4, "op": "unsubscribe", "topic": "a/#"} -> {"event": "done", "id": 4, "reasonCodes": [...]}
//   {"id": 5, "op": "end"}  -> {"event": "done", "id": 5}   (DISCONNECT, then close)
// Unprompted: {"event": "message", "topic", "payload", "qos", "retain", "dup", "properties"},
//             {"event": "disconnect", "reasonCode", "properties"} (a server DISCONNECT, v5),
//             {"event": "error", "message", "code"}, {"event": "close"}.
// Binary property values (correlationData) travel as {"hex": "..."} both ways.
// A failed command answers {"event": "done", "id": n, "error": "...", "code": n}.
'use strict';

const mqtt = require('mqtt');
const readline = require('readline');

let client = null;

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

function done(id, err, extra) {
  emit(Object.assign({ event: 'done', id },
    err ? { error: String(err.message || err), code: err.code } : {}, extra));
}

// Buffers (correlation data) <-> {"hex": ...}, so JSON carries any bytes.
function toJson(value) {
  if (Buffer.isBuffer(value)) return { hex: value.toString('hex') };
  if (Array.isArray(value)) return value.map(toJson);
  if (value && typeof value === 'object') {
    const out = {};
    for (const [k, v] of Object.entries(value)) out[k] = toJson(v);
    return out;
  }
  return value;
}

function fromJson(value) {
  if (value && typeof value === 'object' && !Array.isArray(value)) {
    if (typeof value.hex === 'string' && Object.keys(value).length === 1) {
      return Buffer.from(value.hex, 'hex');
    }
    const out = {};
    for (const [k, v] of Object.entries(value)) out[k] = fromJson(v);
    return out;
  }
  return value;
}

const ops = {
  connect(cmd) {
    const options = Object.assign({ reconnectPeriod: 0, connectTimeout: 5000 }, cmd.options);
    if (client) client.end(true);
    client = mqtt.connect(cmd.url, options);
    client.on('connect', (connack) => emit({
      event: 'connect', id: cmd.id, sessionPresent: connack.sessionPresent,
      returnCode: connack.returnCode, reasonCode: connack.reasonCode,
      properties: toJson(connack.properties || {}),
    }));
    client.on('message', (topic, payload, packet) => emit({
      event: 'message', topic, payload: payload.toString('hex'), qos: packet.qos,
      retain: packet.retain, dup: packet.dup, properties: toJson(packet.properties || {}),
    }));
    client.on('disconnect', (packet) => emit({
      event: 'disconnect', reasonCode: packet.reasonCode, properties: toJson(packet.properties || {}),
    }));
    client.on('error', (err) => emit({
      event: 'error', message: String(err.message || err), code: err.code,
    }));
    client.on('close', () => emit({ event: 'close' }));
  },
  subscribe(cmd) {
    const options = Object.assign({ qos: cmd.qos || 0 }, fromJson(cmd.options || {}));
    client.subscribe(cmd.topic, options, (err, granted) =>
      done(cmd.id, err, { granted: (granted || []).map((g) => g.qos) }));
  },
  unsubscribe(cmd) {
    client.unsubscribe(cmd.topic, {}, (err, packet) =>
      done(cmd.id, err, { reasonCodes: (packet && packet.reasonCode !== undefined)
        ? [].concat(packet.reasonCode) : [] }));
  },
  publish(cmd) {
    const payload = Buffer.from(cmd.payload || '', 'hex');
    const options = { qos: cmd.qos || 0, retain: !!cmd.retain };
    if (cmd.properties) options.properties = fromJson(cmd.properties);
    client.publish(cmd.topic, payload, options,
      (err, packet) => done(cmd.id, err, { reasonCode: packet ? packet.reasonCode : undefined }));
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
