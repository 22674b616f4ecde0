// walstream example client (JavaScript, @grpc/grpc-js + @grpc/proto-loader).
//
// Loads ../../proto/plugin.proto at run time, prints every change the server streams and
// acknowledges it. Reconnects 2 s after the stream ends or fails; on Ctrl-C / SIGTERM it
// half-closes the stream and waits for the server to finish the call, so the last acks are
// delivered, then exits.
'use strict';

const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const ADDR = process.env.WALSTREAM_ADDR || '127.0.0.1:50051';
const RECONNECT_DELAY_MS = 2000;
const SHUTDOWN_GRACE_MS = 5000;

const definition = protoLoader.loadSync(path.join(__dirname, '../../proto/plugin.proto'), {
  keepCase: true, // field names as in the .proto: pg_lsn, json_payload
  longs: String, // uint64 pg_lsn as a decimal string: no precision lost above 2^53
  defaults: true,
  oneofs: true, // sets msg.msg to the name of the field that is set
});
const { plugin } = grpc.loadPackageDefinition(definition);

let client = null; // a fresh client (channel) per attempt, see connect()
let call = null; // the open Session call, if any
let reconnectTimer = null;
let stopping = false;

function log(msg) {
  process.stderr.write(`[js-client] ${msg}\n`);
}

// The event's pg_lsn and the line to print for it; null for a message kind this client doesn't know.
function describe(msg) {
  const kind = msg.msg; // 'insert' | 'update' | 'delete' | 'truncate'
  const ev = kind && msg[kind];
  if (!ev) return null;
  let line = `${kind.toUpperCase()} ${ev.schema}.${ev.table}`;
  if (kind !== 'truncate') line += `: ${ev.json_payload}`;
  return { lsn: ev.pg_lsn, line };
}

function connect() {
  reconnectTimer = null;
  log(`connecting to ${ADDR}`);
  // A channel that failed to connect backs off on its own (up to minutes) and fails calls fast
  // meanwhile; a new client per attempt keeps the reconnect delay at RECONNECT_DELAY_MS.
  client = new plugin.PluginService(ADDR, grpc.credentials.createInsecure());
  const current = client.Session();
  call = current;

  current.on('data', (msg) => {
    if (stopping) return; // not handled, not acked: the server sends it again next time
    const event = describe(msg);
    if (!event) return;
    process.stdout.write(event.line + '\n');
    current.write({ ack: { pg_lsn: event.lsn } });
  });
  current.on('error', () => {}); // reported through 'status' below
  current.on('status', (status) => {
    call = null;
    client?.close();
    client = null;
    if (status.code === grpc.status.OK) log('stream ended by server');
    else log(`stream failed: ${grpc.status[status.code]}: ${status.details}`);
    if (stopping) return shutdown();
    reconnectTimer = setTimeout(connect, RECONNECT_DELAY_MS);
  });
}

function shutdown() {
  if (reconnectTimer) clearTimeout(reconnectTimer);
  client?.close();
  log('bye');
  process.exit(0);
}

function onSignal(signal) {
  if (stopping) return;
  stopping = true;
  log(`got ${signal}, flushing acks and exiting`);
  if (!call) return shutdown();
  // Half-close: grpc-js sends every ack written so far, then END_STREAM. The 'status' handler
  // exits once the server has finished the call.
  call.end();
  setTimeout(() => {
    if (call) {
      log('server did not finish the call in time; cancelling');
      call.cancel();
    }
  }, SHUTDOWN_GRACE_MS).unref();
}

process.on('SIGINT', onSignal);
process.on('SIGTERM', onSignal);
connect();
