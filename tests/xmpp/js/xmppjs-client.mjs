// An XMPP client built on xmpp.js (@xmpp/client), driven by tests/xmpp/test_interop_xmppjs.py.
//
// Connection parameters come from the command line (the password from the environment):
//
//   XMPP_PASSWORD=... node xmppjs-client.mjs --service ws://127.0.0.1:8000/xmpp-websocket \
//       --jid alice@example.test [--resource xmppjs] [--mechanism PLAIN] [--timeout 10000] \
//       [--trace]
//
// What to do comes on stdin, one JSON object per line:
//
//   {"op": "presence"}                               available presence (or "type", "to")
//   {"op": "message", "to": "...", "body": "...", "id": "..."}
//   {"op": "roster"}                                 RFC 6121 roster get
//   {"op": "stop"}                                   close the stream and the WebSocket
//
// What happened goes to stdout, one JSON object per line, each with an "event" key:
// start, features, auth, online, sm, message, presence, roster, sent, acked, stopped,
// disconnect, error, offline, exit; with --trace also "in" and "out" for every element. The process ends with code 0 after a stop, 2 when the login failed and 1 on
// any other failure.

import { parseArgs } from "node:util";
import { createInterface } from "node:readline";
import { createRequire } from "node:module";

let websocketImplementation = "built-in";
if (typeof globalThis.WebSocket === "undefined") {
  // Node.js before 22 has no WebSocket global; xmpp.js expects the WHATWG API, which ws provides.
  const { WebSocket } = await import("ws");
  globalThis.WebSocket = WebSocket;
  const version = createRequire(import.meta.url)("ws/package.json").version;
  websocketImplementation = `ws ${version}`;
}
const { client, xml } = await import("@xmpp/client");

const NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl";
const NS_ROSTER = "jabber:iq:roster";
const NS_SM = "urn:xmpp:sm:3";
const NS_FRAMING = "urn:ietf:params:xml:ns:xmpp-framing";

function emit(event, fields = {}) {
  process.stdout.write(`${JSON.stringify({ event, ...fields })}\n`);
}

function describeError(err) {
  return {
    name: err?.name ?? "Error",
    condition: err?.condition ?? null,
    text: err?.text ?? null,
    message: String(err?.message ?? err),
  };
}

async function finish(code) {
  emit("exit", { code });
  // let stdout drain before leaving
  await new Promise((resolve) => process.stdout.write("", resolve));
  process.exit(code);
}

const { values: args } = parseArgs({
  options: {
    service: { type: "string" },
    jid: { type: "string" },
    resource: { type: "string", default: "xmppjs" },
    mechanism: { type: "string" },
    timeout: { type: "string", default: "10000" },
    trace: { type: "boolean", default: false },
  },
});
const password = process.env.XMPP_PASSWORD;
if (!args.service || !args.jid || !args.jid.includes("@") || password === undefined) {
  process.stderr.write(
    "usage: XMPP_PASSWORD=... xmppjs-client.mjs --service ws://host/path --jid user@domain\n",
  );
  process.exit(64);
}
const [username, domain] = args.jid.split("@");

// Without --mechanism, xmpp.js chooses by itself (what an application gets by default).
// With it, the given mechanism is used, or the login fails if the server does not offer it.
let credentials = { username, password };
if (args.mechanism) {
  credentials = async (authenticate, usable) => {
    if (!usable.includes(args.mechanism)) {
      throw new Error(`${args.mechanism} is not offered (usable: ${usable.join(", ")})`);
    }
    await authenticate({ username, password }, args.mechanism);
  };
}

const xmpp = client({
  service: args.service,
  domain,
  resource: args.resource,
  credentials,
  timeout: Number(args.timeout),
});
xmpp.reconnect.stop(); // a test wants to see a failure, not a second attempt

emit("start", { node: process.version, websocket: websocketImplementation });

// clean: the WebSocket closing handshake completed (RFC 6455 §7.1.5)
xmpp.on("disconnect", (detail) => emit("disconnect", { clean: Boolean(detail?.clean) }));
xmpp.on("error", (err) => emit("error", describeError(err)));
if (args.trace) {
  xmpp.on("element", (element) => emit("in", { xml: element.toString() }));
  xmpp.on("send", (element) => emit("out", { xml: element.toString() }));
}

xmpp.on("nonza", (element) => {
  if (element.is("features", "http://etherx.jabber.org/streams")) {
    const mechanisms = element.getChild("mechanisms", NS_SASL);
    if (mechanisms) {
      emit("features", {
        mechanisms: mechanisms.getChildren("mechanism").map((m) => m.text()),
      });
    }
  } else if (element.is("enabled", NS_SM)) {
    emit("sm", { status: "enabled", resume: element.attrs.resume ?? null });
  } else if (element.is("failed", NS_SM)) {
    emit("sm", { status: "failed" });
  }
});
xmpp.on("send", (element) => {
  if (element.is("auth", NS_SASL)) emit("auth", { mechanism: element.attrs.mechanism });
});

xmpp.on("stanza", (stanza) => {
  if (stanza.is("message")) {
    emit("message", {
      from: stanza.attrs.from ?? null,
      to: stanza.attrs.to ?? null,
      type: stanza.attrs.type ?? "normal",
      id: stanza.attrs.id ?? null,
      body: stanza.getChildText("body"),
    });
  } else if (stanza.is("presence")) {
    emit("presence", {
      from: stanza.attrs.from ?? null,
      type: stanza.attrs.type ?? "available",
    });
  }
});

xmpp.streamManagement.on("ack", (stanza) => {
  emit("acked", { name: stanza.name, id: stanza.attrs.id ?? null });
});

async function rosterGet() {
  const query = await xmpp.iqCaller.get(xml("query", NS_ROSTER));
  return query.getChildren("item").map((item) => ({
    jid: item.attrs.jid,
    name: item.attrs.name ?? null,
    subscription: item.attrs.subscription ?? "none",
    groups: item.getChildren("group").map((g) => g.text()),
  }));
}

async function perform(command) {
  switch (command.op) {
    case "presence": {
      const attrs = {};
      if (command.to) attrs.to = command.to;
      if (command.type) attrs.type = command.type;
      await xmpp.send(xml("presence", attrs));
      emit("sent", { op: "presence" });
      return false;
    }
    case "message": {
      const attrs = { to: command.to, type: command.type ?? "chat" };
      if (command.id) attrs.id = command.id;
      await xmpp.send(xml("message", attrs, xml("body", {}, command.body)));
      emit("sent", { op: "message", id: command.id ?? null });
      return false;
    }
    case "roster":
      emit("roster", { items: await rosterGet() });
      return false;
    case "stop": {
      // resolves with the server's <close/> when it answered ours in time (RFC 7395 §3.6)
      const answer = await xmpp.stop();
      emit("stopped", { server_closed: Boolean(answer?.is("close", NS_FRAMING)) });
      return true;
    }
    default:
      throw new Error(`unknown op ${JSON.stringify(command.op)}`);
  }
}

xmpp.on("offline", () => emit("offline"));

try {
  const address = await xmpp.start();
  emit("online", { jid: address.toString() });
} catch (err) {
  emit("error", { ...describeError(err), during: "login" });
  try {
    await xmpp.stop();
  } catch {
    // the connection may already be gone
  }
  await finish(2);
}

const lines = createInterface({ input: process.stdin });
let stopped = false;
for await (const line of lines) {
  if (!line.trim()) continue;
  try {
    stopped = await perform(JSON.parse(line));
  } catch (err) {
    emit("error", { ...describeError(err), during: "command" });
    await finish(1);
  }
  if (stopped) break;
}
if (!stopped) {
  // stdin closed without a stop: close as cleanly as we can, but say so
  emit("error", { name: "Error", message: "stdin closed before a stop command" });
  await xmpp.stop().catch(() => {});
  await finish(1);
}
await finish(0);
