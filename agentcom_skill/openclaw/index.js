// The AgentCom channel for OpenClaw: `agentcom watch` runs as a child of the gateway and hands
// each conversation to this plugin as an A2A task (the subset the watch speaks: SendMessage with
// returnImmediately, GetTask), on a route of the gateway's own port guarded by a token made at
// each start. Each task becomes a channel turn in a session per AgentCom peer (or thread); the
// turn's final reply completes the task, and the watch posts it to the hub as a reply. The
// Python side keeps everything else: the store, leases, Tier 0, batching, the loop guard.
//
// Installed by `agentcom openclaw install` (plain ESM, no build step). Lifecycle: the gateway
// starts the channel (startAccount) -> the watch starts; the watch dies -> startAccount throws
// and the gateway restarts the channel; the channel stops -> the watch gets SIGTERM; the gateway
// killed hard -> the watch notices its parent is gone (--parent-pid) and exits.

import { spawn } from "node:child_process";
import { createHash, randomBytes, randomUUID, timingSafeEqual } from "node:crypto";
import { createChatChannelPlugin, defineChannelPluginEntry } from "openclaw/plugin-sdk/channel-core";
import { resolveChannelInboundRouteEnvelope } from "openclaw/plugin-sdk/channel-inbound";
import { isReplyPayloadTerminalContent } from "openclaw/plugin-sdk/reply-payload";
import { registerPluginHttpRoute } from "openclaw/plugin-sdk/webhook-ingress";
import { runDetachedWebhookWork } from "openclaw/plugin-sdk/webhook-request-guards";

const CHANNEL = "agentcom";
const ACCOUNT = "default";
const ROUTE = "/agentcom/a2a";
const MAX_BODY = 1024 * 1024;
const STOP_GRACE_MS = 10_000;
const TERMINAL_KEEP_MS = 60 * 60 * 1000;
const TERMINAL_MAX = 500;
// A turn refused before it ran (the gateway still starting: "another OpenClaw process owns
// state-lifecycle", a draining gateway) is tried again, this many times, waiting longer each time.
const TURN_TRIES = 4;
const TURN_RETRY_MS = 2_000;
const NOT_RAN = /state-lifecycle|draining|not ready|starting up|try again later/i;
// OpenClaw's own text for a turn that produced nothing (it asks the model again after a bare
// NO_REPLY, then sends this as an error payload): never an answer to a peer.
const NO_ANSWER = /couldn't generate a response/i;
const WORKING = "TASK_STATE_WORKING";

let pluginRuntime;

// accounts ---------------------------------------------------------------------------

function resolveAccount(cfg, accountId) {
  const config = cfg?.channels?.[CHANNEL] ?? {};
  return {
    accountId: accountId ?? ACCOUNT,
    enabled: config.enabled !== false,
    configured: typeof config.command === "string" && config.command.length > 0,
    config,
  };
}

// tasks (in memory: a gateway restart loses them; the watch resends a lost task once) ----------

class TaskStore {
  #tasks = new Map();
  #finished = new Map();

  create(contextId) {
    this.#prune();
    const task = {
      id: randomUUID(),
      contextId,
      status: { state: WORKING, timestamp: new Date().toISOString() },
      artifacts: [],
      history: [],
    };
    this.#tasks.set(task.id, task);
    return task;
  }

  get(id) {
    this.#prune();
    return this.#tasks.get(id);
  }

  complete(id, text) {
    const task = this.#open(id);
    if (!task) return;
    if (text && text.trim()) task.artifacts = [{ artifactId: randomUUID(), parts: [{ text }] }];
    task.status = { state: "TASK_STATE_COMPLETED", timestamp: new Date().toISOString() };
    this.#finished.set(id, Date.now());
  }

  fail(id, reason) {
    const task = this.#open(id);
    if (!task) return;
    const text = String(reason instanceof Error ? reason.message : reason).slice(0, 500);
    task.status = {
      state: "TASK_STATE_FAILED",
      timestamp: new Date().toISOString(),
      message: { messageId: randomUUID(), contextId: task.contextId, role: "ROLE_AGENT", parts: [{ text }] },
    };
    this.#finished.set(id, Date.now());
  }

  clear() {
    this.#tasks.clear();
    this.#finished.clear();
  }

  #open(id) {
    const task = this.#tasks.get(id);
    return task && task.status.state === WORKING ? task : undefined;
  }

  #prune() {
    const before = Date.now() - TERMINAL_KEEP_MS;
    for (const [id, at] of this.#finished) {
      if (at > before && this.#finished.size <= TERMINAL_MAX) break;
      this.#finished.delete(id);
      this.#tasks.delete(id);
    }
  }
}

// conversations ----------------------------------------------------------------------

// The watch names each conversation (a2a/plan.py's context_id): agentcom:peer:<label>,
// agentcom:thread:<label>:<root>, agentcom:broadcast:<label>. A label is the sender's id when it
// is a plain lowercase id, else a readable stem and a hash.
export function conversationOf(contextId) {
  const parts = contextId.split(":");
  if (parts[0] === "agentcom" && parts.length >= 3) {
    const kind = parts[1];
    if (kind === "peer") return { sender: parts.slice(2).join(":"), id: parts.slice(2).join(":"), kind };
    if (kind === "broadcast") {
      const sender = parts.slice(2).join(":");
      return { sender, id: `broadcast:${sender}`, kind };
    }
    if (kind === "thread" && parts.length >= 4) {
      const sender = parts.slice(2, -1).join(":");
      return { sender, id: `${sender}:${parts[parts.length - 1]}`, kind };
    }
  }
  return { sender: "agentcom", id: contextId.toLowerCase(), kind: "other" };
}

function header(conversation) {
  const where = conversation.kind === "broadcast" ? "a broadcast" : "a direct message";
  return `[AgentCom channel] ${where} from the agent ${conversation.sender}, delivered by agentcom from its hub.`;
}

// one task -> one channel turn -----------------------------------------------------------

async function runTurn({ cfg, account, channelRuntime, store, task, text, messageId, log }) {
  const conversation = conversationOf(task.contextId);
  for (let attempt = 1; ; attempt += 1) {
    const outcome = await dispatchOnce({ cfg, account, channelRuntime, task, text, messageId, conversation });
    if (outcome.kind === "answer") return store.complete(task.id, outcome.text);
    if (outcome.kind === "silent") return store.complete(task.id, "");
    if (outcome.kind === "not_ran" && attempt < TURN_TRIES) {
      log?.info?.(`agentcom: turn not run yet (${outcome.reason}); trying again (${attempt}/${TURN_TRIES - 1})`);
      await new Promise((resolve) => setTimeout(resolve, TURN_RETRY_MS * 2 ** (attempt - 1)));
      continue;
    }
    return store.fail(task.id, outcome.reason);
  }
}

async function dispatchOnce({ cfg, account, channelRuntime, task, text, messageId, conversation }) {
  let answer;
  let errorText;
  let failure;
  try {
    const { route, buildEnvelope } = resolveChannelInboundRouteEnvelope({
      cfg,
      channel: CHANNEL,
      accountId: account.accountId,
      peer: { kind: "direct", id: conversation.id },
      ...(conversation.id !== conversation.sender ? { parentPeer: { kind: "direct", id: conversation.sender } } : {}),
      dmScope: "per-account-channel-peer",
    });
    const ingress = await channelRuntime.inbound.ingress.resolveStable({
      channelId: CHANNEL,
      accountId: account.accountId,
      cfg,
      identity: { key: "sender", entryIdPrefix: "agentcom-entry" },
      subject: { stableId: conversation.sender },
      conversation: { kind: "direct", id: conversation.id },
      contextBinding: {
        agentId: route.agentId,
        sessionKey: route.sessionKey,
        messageId,
        inboundEventKind: "user_request",
      },
      // who may write is agentcom's to decide (Tier 0, allow_from, ignore_from), before the task
      dmPolicy: "allowlist",
      allowFrom: [conversation.sender],
    });
    if (ingress.ingress.admission !== "dispatch") {
      return { kind: "failed", reason: `the gateway's ingress policy declined the turn (${ingress.ingress.admission})` };
    }
    const timestamp = Date.now();
    const target = `${CHANNEL}:${conversation.sender}`;
    const forAgent = `${header(conversation)}\n${text}`;
    const ctxPayload = channelRuntime.inbound.buildContext({
      channel: CHANNEL,
      accountId: route.accountId ?? account.accountId,
      messageId,
      messageIdFull: messageId,
      timestamp,
      from: target,
      sender: { id: conversation.sender, name: conversation.sender },
      conversation: { kind: "direct", id: conversation.id, label: conversation.sender },
      route: {
        agentId: route.agentId,
        dmScope: route.dmScope,
        accountId: route.accountId,
        routeSessionKey: route.sessionKey,
        dispatchSessionKey: route.sessionKey,
      },
      reply: { to: target, originatingTo: target },
      message: {
        body: buildEnvelope({ channel: "AgentCom", from: conversation.sender, timestamp, body: forAgent }),
        bodyForAgent: forAgent,
        rawBody: text,
        commandBody: text,
      },
      channelIngress: ingress,
      extra: { CommandInterpretationSuppressed: true },
    });
    const dispatch = await channelRuntime.inbound.dispatch({
      cfg,
      channel: CHANNEL,
      accountId: account.accountId,
      route: { agentId: route.agentId, dmScope: route.dmScope, sessionKey: route.sessionKey },
      ctxPayload,
      delivery: {
        deliver: async (payload, info) => {
          if (info.kind !== "final" || !isReplyPayloadTerminalContent(payload)) return;
          if (payload.isError) errorText = payload.text ?? "error";
          else if (answer === undefined) answer = payload.text ?? "";
        },
        onError: (error) => {
          failure = error;
        },
      },
      replyOptions: { sourceReplyDeliveryMode: "automatic" },
      replyPipeline: {},
    });
    if (answer !== undefined) return { kind: "answer", text: answer };
    if (dispatch.admission.kind !== "dispatch") {
      return { kind: "failed", reason: `the channel declined the turn: ${dispatch.admission.kind}` };
    }
    if (!dispatch.dispatched) return { kind: "not_ran", reason: "the turn was accepted but not dispatched" };
  } catch (error) {
    failure = error;
  }
  if (answer !== undefined) return { kind: "answer", text: answer };
  const reason = failure ? String(failure instanceof Error ? failure.message : failure) : errorText;
  if (reason && NOT_RAN.test(reason)) return { kind: "not_ran", reason };
  if (errorText && NO_ANSWER.test(errorText) && !failure) return { kind: "silent" };
  // nothing at all: the messages go back to `agentcom check` rather than being taken as answered
  return { kind: "failed", reason: reason || "the turn ended without a reply" };
}

// the route the watch calls ---------------------------------------------------------------

function digest(text) {
  return createHash("sha256").update(text).digest();
}

function rpcError(id, code, message) {
  return { jsonrpc: "2.0", id, error: { code, message } };
}

function writeJson(res, status, value) {
  res.statusCode = status;
  res.setHeader("content-type", "application/json; charset=utf-8");
  res.setHeader("cache-control", "no-store");
  res.end(JSON.stringify(value));
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on("data", (chunk) => {
      size += chunk.length;
      if (size > MAX_BODY) {
        reject(new Error("too large"));
        req.destroy();
      } else chunks.push(chunk);
    });
    req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    req.on("error", reject);
  });
}

function textOf(parts) {
  return (Array.isArray(parts) ? parts : [])
    .map((p) => (p && typeof p.text === "string" ? p.text : ""))
    .filter(Boolean)
    .join("\n");
}

function createHandler({ token, store, startTurn }) {
  const expected = digest(token);
  return async (req, res) => {
    if (req.method !== "POST") {
      writeJson(res, 405, { error: "POST only" });
      return true;
    }
    const presented = req.headers.authorization?.match(/^Bearer\s+(\S+)$/i)?.[1];
    if (!presented || !timingSafeEqual(digest(presented), expected)) {
      writeJson(res, 401, { error: "Unauthorized" });
      return true;
    }
    let request;
    try {
      request = JSON.parse(await readBody(req));
    } catch {
      writeJson(res, 200, rpcError(null, -32700, "Parse error"));
      return true;
    }
    const id = typeof request?.id === "string" || typeof request?.id === "number" ? request.id : null;
    const params = request?.params ?? {};
    if (request?.method === "SendMessage" || request?.method === "message/send") {
      const message = params.message ?? {};
      const text = textOf(message.parts);
      const contextId = typeof message.contextId === "string" ? message.contextId : "";
      if (!text.trim() || !/^[A-Za-z0-9._:-]{1,128}$/.test(contextId)) {
        writeJson(res, 200, rpcError(id, -32602, "Invalid SendMessage params: contextId and a text part required"));
        return true;
      }
      const task = store.create(contextId);
      startTurn(task, text, typeof message.messageId === "string" ? message.messageId : randomUUID());
      writeJson(res, 200, { jsonrpc: "2.0", id, result: { task } });
      return true;
    }
    if (request?.method === "GetTask" || request?.method === "tasks/get") {
      const task = typeof params.id === "string" ? store.get(params.id) : undefined;
      writeJson(res, 200, task ? { jsonrpc: "2.0", id, result: task } : rpcError(id, -32001, "Task not found"));
      return true;
    }
    writeJson(res, 200, rpcError(id, -32601, `Method not found: ${String(request?.method).slice(0, 40)}`));
    return true;
  };
}

// the watch, a child of the gateway -------------------------------------------------------------

function watchEnv(config, url, token) {
  const env = { ...process.env };
  const set = (name, value) => {
    if (typeof value === "string" && value) env[name] = value;
  };
  // the user's agentcom settings stay theirs (the config file, Tier 0 rules, allowlists...):
  // the plugin names where they are, and sets only the wake target
  set("AGENTCOM_CONFIG", config.config);
  set("AGENTCOM_HUB_URL", config.hubUrl);
  set("AGENTCOM_AGENT_ID", config.agentId);
  set("AGENTCOM_TOKEN_FILE", config.tokenFile);
  set("AGENTCOM_STATE_DIR", config.stateDir);
  env.AGENTCOM_WAKE_MODE = "a2a";
  env.AGENTCOM_WAKE_URL = url;
  env.AGENTCOM_WAKE_TOKEN = token;
  return env;
}

function lines(stream, onLine) {
  let buffered = "";
  stream.setEncoding("utf8");
  stream.on("data", (chunk) => {
    buffered += chunk;
    let at;
    while ((at = buffered.indexOf("\n")) >= 0) {
      onLine(buffered.slice(0, at));
      buffered = buffered.slice(at + 1);
    }
  });
}

async function stopChild(child) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once("exit", resolve));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), STOP_GRACE_MS);
  await exited;
  clearTimeout(timer);
}

async function startAgentcomAccount(ctx) {
  const { account } = ctx;
  if (!account.configured) {
    throw new Error("the AgentCom channel is not configured: run `agentcom openclaw install`");
  }
  const log = ctx.log;
  ctx.setStatus({ accountId: account.accountId, running: true, configured: true, enabled: account.enabled });
  const channelRuntime = ctx.channelRuntime ?? pluginRuntime?.channel;
  const token = randomBytes(32).toString("hex");
  const store = new TaskStore();
  const startTurn = (task, text, messageId) => {
    // detached webhook work: a turn started from an HTTP route otherwise fails with GatewayDrainingError
    runDetachedWebhookWork(async () => {
      await runTurn({ cfg: ctx.cfg, account, channelRuntime, store, task, text, messageId, log });
    }).catch((error) => store.fail(task.id, error));
  };
  const unregister = registerPluginHttpRoute({
    path: ROUTE,
    auth: "plugin",
    match: "exact",
    pluginId: CHANNEL,
    source: "agentcom-gateway",
    accountId: account.accountId,
    throwOnFailure: true,
    handler: createHandler({ token, store, startTurn }),
  });
  let child;
  try {
    // the port the gateway listens on (set by the gateway itself, even when given only as --port)
    const port = process.env.OPENCLAW_GATEWAY_PORT || ctx.cfg?.gateway?.port || 18789;
    const url = account.config.gatewayUrl ? account.config.gatewayUrl.replace(/\/+$/, "") + ROUTE : `http://127.0.0.1:${port}${ROUTE}`;
    child = spawn(account.config.command, ["watch", "--jsonl", "--parent-pid", String(process.pid)], {
      env: watchEnv(account.config, url, token),
      stdio: ["ignore", "pipe", "pipe"],
    });
    const ended = new Promise((_, reject) => {
      child.once("error", (error) => reject(new Error(`cannot start agentcom watch: ${error.message}`)));
      child.once("exit", (code, signal) =>
        reject(new Error(`agentcom watch exited (${signal ? `signal ${signal}` : `code ${code}`}); the gateway restarts it`)),
      );
    });
    lines(child.stderr, (line) => log?.info?.(line));
    lines(child.stdout, (line) => {
      try {
        const event = JSON.parse(line);
        if (event.event === "connected") ctx.setStatus({ accountId: account.accountId, connected: true });
        if (event.event === "disconnected") ctx.setStatus({ accountId: account.accountId, connected: false });
      } catch {
        // not an event line
      }
    });
    log?.info?.(`agentcom: watch started (pid ${child.pid}), tasks at ${url}`);
    const aborted = new Promise((resolve) => {
      if (ctx.abortSignal.aborted) resolve();
      else ctx.abortSignal.addEventListener("abort", () => resolve(), { once: true });
    });
    await Promise.race([ended, aborted]);
  } finally {
    if (child) await stopChild(child);
    unregister();
    store.clear();
    ctx.setStatus({ accountId: account.accountId, running: false });
  }
}

// the channel -----------------------------------------------------------------------------

export const agentcomChannelPlugin = createChatChannelPlugin({
  base: {
    id: CHANNEL,
    meta: {
      id: CHANNEL,
      label: "AgentCom",
      selectionLabel: "AgentCom (agent-to-agent hub)",
      blurb: "Messages from other agents on an AgentCom hub.",
      order: 90,
    },
    capabilities: { chatTypes: ["direct"] },
    reload: { configPrefixes: [`channels.${CHANNEL}`] },
    config: {
      listAccountIds: (cfg) => (cfg?.channels?.[CHANNEL] ? [ACCOUNT] : []),
      resolveAccount: (cfg, accountId) => resolveAccount(cfg, accountId),
      defaultAccountId: () => ACCOUNT,
      isConfigured: (account) => account.configured,
      isEnabled: (account) => account.enabled,
    },
    gateway: { startAccount: async (ctx) => await startAgentcomAccount(ctx) },
  },
});

export default defineChannelPluginEntry({
  id: CHANNEL,
  name: "AgentCom",
  description: "AgentCom channel: other agents' messages from an AgentCom hub",
  plugin: agentcomChannelPlugin,
  setRuntime: (runtime) => {
    pluginRuntime = runtime;
  },
});
