// pywebtransport messaging for browsers: channels, datagram messages and JSON-RPC 2.0 over a
// WebTransport session. It speaks version 1 of the message protocol (docs/messaging-protocol.md),
// like the Python package pywebtransport.messaging.
//
// A plain ES module without dependencies:
//
//   import { Messenger } from "/pywebtransport/messaging.js";
//   const wt = new WebTransport(url);
//   await wt.ready;
//   const messenger = new Messenger(wt);
//   const chat = await messenger.openChannel("chat");
//   await chat.send({ text: "hello" });
//   for await (const message of chat) console.log(message);
//
// Reading follows the application: a channel reads its stream only while someone waits in
// receive(), so a slow reader leaves the bytes in the stream and flow control slows the sender.
// Codecs: "json" and "bytes" (a peer asking for "msgpack" is refused with CODEC_UNSUPPORTED).
// Topics is the member's side of a pywebtransport.pubsub Hub (topics, rooms, presence).
//
// Stream error codes: a page can send only codes 0 to 255 (the WebTransport API's
// streamErrorCode is an octet), so the protocol's own codes are 0xF1 to 0xF6 and 0xF0 to 0xFF are
// reserved for it; Channel.abort(code) takes 0 to 239 for the application.

const PREAMBLE = Uint8Array.of(0x50, 0x57, 0x4d, 0x01); // "PWM", version 1
const DEFAULT_MAX_MESSAGE_SIZE = 1 << 20;
const MAX_HELLO_SIZE = 4096;
const MAX_CHANNEL_NAME = 256;
const JSONRPC = "2.0";
const CANCEL = "rpc.cancel";

/** Application error codes on channel streams (RESET_STREAM / STOP_SENDING). */
export const CODES = Object.freeze({
  CLOSED: 0,
  CHANNEL_UNKNOWN: 0xf1,
  CODEC_UNSUPPORTED: 0xf2,
  MESSAGE_TOO_LARGE: 0xf3,
  TRUNCATED: 0xf4,
  BAD_HELLO: 0xf5,
  CHANNEL_REFUSED: 0xf6,
});

/** JSON-RPC 2.0 error codes: the standard ones, and TOO_MANY_CALLS of this protocol. */
export const RPC_ERRORS = Object.freeze({
  PARSE_ERROR: -32700,
  INVALID_REQUEST: -32600,
  METHOD_NOT_FOUND: -32601,
  INVALID_PARAMS: -32602,
  INTERNAL_ERROR: -32603,
  TOO_MANY_CALLS: -32000,
});

const REFUSALS = new Set([
  CODES.CHANNEL_UNKNOWN,
  CODES.CODEC_UNSUPPORTED,
  CODES.CHANNEL_REFUSED,
  CODES.BAD_HELLO,
]);

// ------------------------------------------------------------------------------------ errors

/**
 * Base class of every error of this module. `code` is a stream error code (see CODES) or a
 * JSON-RPC error code where one applies, else null.
 */
export class MessagingError extends Error {
  constructor(message, { code = null, cause } = {}) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = new.target.name;
    this.code = code;
  }
}

/**
 * The channel has ended: closed by either side, reset, or its session is gone. `code` is the
 * stream error code when known: null after the peer's FIN (or when the browser did not say),
 * CODES.CLOSED after a close, the peer's code after a reset or STOP_SENDING.
 */
export class ChannelClosedError extends MessagingError {}

/** The peer refused to open the channel; `code` says why (CHANNEL_UNKNOWN, CODEC_UNSUPPORTED, ...). */
export class ChannelRefusedError extends ChannelClosedError {}

/** A message is larger than the limit of the side that would receive it; nothing was sent. */
export class MessageTooLargeError extends MessagingError {}

/** One received message did not decode with the channel's codec; the channel goes on. */
export class DecodeError extends MessagingError {}

/** Nothing arrived in time (receive, acceptChannel, openChannel). */
export class MessagingTimeoutError extends MessagingError {}

/**
 * A JSON-RPC error object: what call() rejects with when the peer answered with an error, and
 * what a method handler throws to answer with a particular error.
 * @param {number} code the JSON-RPC error code (see RPC_ERRORS; applications use codes outside
 *   -32768 to -32000).
 * @param {string} message
 * @param {*} [data] the optional `data` member.
 */
export class RpcError extends MessagingError {
  constructor(code, message, data) {
    super(message, { code });
    this.data = data;
  }
}

/** A call got no answer within its timeoutMs (the peer was sent rpc.cancel). */
export class RpcTimeoutError extends MessagingTimeoutError {}

/** The JSON-RPC error codes of a pywebtransport.pubsub hub, met by Topics calls. */
export const PUBSUB_ERRORS = Object.freeze({ FORBIDDEN: -32010, BROKER_UNAVAILABLE: -32011 });

/** The hub's authorize hook refused a Topics operation (`code` -32010). */
export class ForbiddenError extends RpcError {}

/** The hub's broker is away (`code` -32011): nothing was published, try again later. */
export class BrokerUnavailableError extends RpcError {}

// ------------------------------------------------------------------------------------ helpers

function ignore() {}

function hex(code) {
  return `0x${code.toString(16).padStart(8, "0")}`;
}

function tooLarge(what, limit) {
  return new MessageTooLargeError(`${what} is over ${limit}`, { code: CODES.MESSAGE_TOO_LARGE });
}

/** Why a stream failed: the peer's code when the browser says it, else the browser's message. */
function failureText(error, code, verb) {
  return code === null ? String(error?.message ?? error) : `the peer ${verb} it with ${codeName(code)}`;
}

function codeName(code) {
  return Object.keys(CODES).find((key) => CODES[key] === code) ?? hex(code);
}

/** The stream error code a browser error carries, or null. */
function streamErrorCode(error) {
  const code = error?.streamErrorCode;
  return typeof code === "number" ? code : null;
}

/**
 * A WebTransportError carrying `code`, for writer.abort() / reader.cancel(), or null if this
 * browser cannot send that code (Chromium clamps streamErrorCode to 0-255).
 */
function carrying(code) {
  const message = `stream error ${hex(code)}`;
  if (typeof WebTransportError !== "function") {
    return Object.assign(new Error(message), { streamErrorCode: code }); // outside browsers
  }
  const attempts = [
    () => new WebTransportError({ message, streamErrorCode: code }), // Chromium's form
    () => new WebTransportError(message, { streamErrorCode: code }), // the specification's form
  ];
  for (const attempt of attempts) {
    try {
      const error = attempt();
      if (error.streamErrorCode === code) return error;
    } catch {
      // the other form, then
    }
  }
  return null;
}

/** The abort/cancel reason that sends `code` (0 to 255), or null where the browser cannot. */
function streamError(code) {
  return carrying(code);
}

/** A promise of the error `promise` rejects with, or of null if it resolves. */
function failureOf(promise) {
  return promise.then(
    () => null,
    (error) => error,
  );
}

/** Resolve to `fallback` if `promise` did not settle within `ms` (the promise runs on). */
function deadline(promise, ms, fallback) {
  let timer;
  const expiry = new Promise((resolve) => {
    timer = setTimeout(() => resolve(fallback), ms);
  });
  return Promise.race([promise, expiry]).finally(() => clearTimeout(timer));
}

function isObject(value) {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function frame(payload) {
  const out = new Uint8Array(4 + payload.length);
  new DataView(out.buffer).setUint32(0, payload.length);
  out.set(payload, 4);
  return out;
}

function prefixed(first, payload) {
  const out = new Uint8Array(first.length + payload.length);
  out.set(first);
  out.set(payload, first.length);
  return out;
}

function checkChannelName(name) {
  const length = typeof name === "string" ? [...name].length : 0;
  if (length === 0 || length > MAX_CHANNEL_NAME) {
    throw new TypeError(`a channel name is a string of 1 to ${MAX_CHANNEL_NAME} characters`);
  }
}

// ------------------------------------------------------------------------------------ codecs

const utf8 = new TextEncoder();
const strictUtf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

function refuseNonFinite(key, value) {
  if (typeof value === "number" && !Number.isFinite(value)) {
    throw new TypeError("NaN and infinities have no JSON form");
  }
  return value;
}

function encodeJson(value) {
  const text = JSON.stringify(value, refuseNonFinite);
  if (text === undefined) throw new TypeError(`a ${typeof value} has no JSON form`);
  return utf8.encode(text);
}

function decodeJson(payload) {
  return JSON.parse(strictUtf8.decode(payload));
}

function toBytes(value) {
  if (value instanceof Uint8Array) return value;
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  if (ArrayBuffer.isView(value)) return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  throw new TypeError("the bytes codec sends a Uint8Array, an ArrayBuffer or a typed array");
}

const CODECS = {
  bytes: { name: "bytes", id: 0, encode: toBytes, decode: (payload) => payload.slice() },
  json: { name: "json", id: 1, encode: encodeJson, decode: decodeJson },
};
const CODECS_BY_ID = [CODECS.bytes, CODECS.json];

function codecNamed(name) {
  if (!Object.hasOwn(CODECS, name)) {
    throw new TypeError(`codec ${JSON.stringify(name)} is not available here`);
  }
  return CODECS[name];
}

// ------------------------------------------------------------------------------------ reading

/** A break of the framing rules; `code` is what the stream is reset with. */
class FramingError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

/**
 * The bytes of one readable stream, read on demand. A read in progress is shared: a caller that
 * stopped waiting (a timeout) loses nothing, the next caller gets the same chunk.
 */
class ByteReader {
  constructor(reader) {
    this._reader = reader;
    this._chunks = [];
    this._pending = null;
    this.size = 0;
    this.ended = false;
  }

  /** Read one more chunk into the buffer; resolves false at the end of the stream. */
  pull() {
    if (this.ended) return Promise.resolve(false);
    this._pending ??= this._reader.read().then(
      (result) => this._took(result),
      (error) => {
        this._pending = null;
        throw error;
      },
    );
    return this._pending;
  }

  _took({ value, done }) {
    this._pending = null;
    if (done) {
      this.ended = true;
    } else if (value.length > 0) {
      this._chunks.push(value);
      this.size += value.length;
    }
    return !done;
  }

  /** Wait until `count` bytes are buffered; false if the stream ended (or `signal` aborted) first. */
  async fill(count, signal) {
    while (this.size < count) {
      if (signal?.aborted || !(await this.pull())) return false;
    }
    return true;
  }

  /** The first `count` buffered bytes (there must be that many), removed unless `keep`. */
  take(count, keep = false) {
    const out = new Uint8Array(count);
    let offset = 0;
    for (let index = 0; offset < count; index += keep ? 1 : 0) {
      const chunk = this._chunks[index];
      const part = chunk.subarray(0, Math.min(chunk.length, count - offset));
      out.set(part, offset);
      offset += part.length;
      if (keep) continue;
      if (part.length === chunk.length) this._chunks.shift();
      else this._chunks[0] = chunk.subarray(part.length);
    }
    if (!keep) this.size -= count;
    return out;
  }

  /** True if the buffer starts with `prefix` (there must be that many bytes). */
  startsWith(prefix) {
    const head = this.take(prefix.length, true);
    return prefix.every((byte, index) => head[index] === byte);
  }

  /**
   * The payload of the next frame, or null at a clean end of the stream.
   * @throws {FramingError} a length over `limit`, or the stream ended inside a frame.
   */
  async readFrame(limit) {
    if (!(await this.fill(4))) {
      if (this.size === 0) return null;
      throw new FramingError(CODES.TRUNCATED, "the stream ended inside a frame's length");
    }
    const length = new DataView(this.take(4, true).buffer).getUint32(0);
    if (length > limit) {
      throw new FramingError(
        CODES.MESSAGE_TOO_LARGE,
        `a frame of ${length} bytes is over the limit of ${limit}`,
      );
    }
    if (!(await this.fill(4 + length))) {
      throw new FramingError(CODES.TRUNCATED, `the stream ended inside a frame of ${length} bytes`);
    }
    this.take(4);
    return this.take(length);
  }

  cancel(reason) {
    return this._reader.cancel(reason).catch(ignore);
  }

  /** A ReadableStream of the bytes still to come, starting with what is buffered. */
  toReadable() {
    const source = {
      pull: async (controller) => {
        while (this.size === 0) {
          if (!(await this.pull())) return controller.close();
        }
        const chunks = this._chunks;
        this._chunks = [];
        this.size = 0;
        for (const chunk of chunks) controller.enqueue(chunk);
      },
      cancel: (reason) => this._reader.cancel(reason),
    };
    return new ReadableStream(source, { highWaterMark: 0 });
  }
}

/**
 * Hands the items `readItem()` produces to receive() calls, reading only while a caller waits.
 * An item is {value}, {error} (for that item only) or {end} (no more items). A caller that
 * times out leaves the read running; its item goes to the next caller.
 */
class Puller {
  constructor(readItem) {
    this._readItem = readItem;
    this._ready = [];
    this._waiters = [];
    this._end = null;
    this._pumping = false;
  }

  next(timeoutMs, what) {
    if (this._ready.length > 0) return settle(this._ready.shift());
    if (this._end) return Promise.reject(this._end);
    return new Promise((resolve, reject) => {
      const waiter = { resolve, reject, timer: null };
      if (timeoutMs != null) {
        waiter.timer = setTimeout(() => {
          this._waiters = this._waiters.filter((other) => other !== waiter);
          reject(new MessagingTimeoutError(`${what}: nothing within ${timeoutMs} ms`));
        }, timeoutMs);
      }
      this._waiters.push(waiter);
      this._pump();
    });
  }

  /** No more items: waiting and later callers get `error`; `discard` drops items not taken yet. */
  end(error, discard = false) {
    this._end ??= error;
    if (discard) this._ready = [];
    for (const waiter of this._waiters.splice(0)) {
      clearTimeout(waiter.timer);
      waiter.reject(this._end);
    }
  }

  async _pump() {
    if (this._pumping) return;
    this._pumping = true;
    try {
      while (this._waiters.length > 0 && !this._end) {
        const item = await this._readItem();
        if (item.end) this.end(item.end);
        else this._deliver(item);
      }
    } finally {
      this._pumping = false;
    }
  }

  _deliver(item) {
    const waiter = this._waiters.shift();
    if (!waiter) {
      this._ready.push(item);
      return;
    }
    clearTimeout(waiter.timer);
    if ("error" in item) waiter.reject(item.error);
    else waiter.resolve(item.value);
  }
}

function settle(item) {
  return "error" in item ? Promise.reject(item.error) : Promise.resolve(item.value);
}

// ------------------------------------------------------------------------------------ channel

/** Yields what `receive()` resolves to, until it rejects with an error `isEnd` accepts. */
async function* receiveUntil(receive, isEnd) {
  for (;;) {
    let value;
    try {
      value = await receive();
    } catch (error) {
      if (isEnd(error)) return;
      throw error;
    }
    yield value;
  }
}

/**
 * One message channel over a bidirectional stream: ordered, reliable messages both ways.
 * Made by Messenger.openChannel(), acceptChannel() and route(); not constructed directly.
 *
 * Properties: `name`; `codec` ("json" or "bytes"); `maxMessageSize` (this side's limit);
 * `peerMaxMessageSize` (the peer's); `closed` (true once this side closed or aborted it, or it
 * failed); `stats` = {messagesSent, messagesReceived, bytesSent, bytesReceived, decodeErrors,
 * protocolErrors} (payload bytes, without framing).
 */
export class Channel {
  constructor({ name, codec, writer, bytes, maxMessageSize, peerMaxMessageSize }) {
    this.name = name;
    this.codec = codec.name;
    this.maxMessageSize = maxMessageSize;
    this.peerMaxMessageSize = peerMaxMessageSize;
    this.stats = {
      messagesSent: 0,
      messagesReceived: 0,
      bytesSent: 0,
      bytesReceived: 0,
      decodeErrors: 0,
      protocolErrors: 0,
    };
    this._codec = codec;
    this._writer = writer;
    this._bytes = bytes;
    this._sendError = null; // once set, every send rejects with it
    this._localEnd = null; // set by close(), abort() or a framing error
    this._onEnd = [];
    this._puller = new Puller(() => this._readItem());
  }

  get closed() {
    return this._localEnd !== null || this._sendError !== null;
  }

  /**
   * Send one message; resolves when the stream's writer has taken it (the writer's
   * backpressure). Concurrent sends are written whole, in call order, by the one writer.
   * @throws {MessageTooLargeError} over the peer's max_message_size (nothing sent; the channel goes on).
   * @throws {TypeError} the codec cannot encode `value`.
   * @throws {ChannelClosedError} the channel has ended (`code`: the peer's STOP_SENDING code).
   */
  async send(value) {
    const payload = this._codec.encode(value);
    if (payload.length > this.peerMaxMessageSize) {
      throw tooLarge(
        `a message of ${payload.length} bytes`,
        `the peer's limit of ${this.peerMaxMessageSize}`,
      );
    }
    if (this._sendError) throw this._sendError;
    try {
      await this._writer.write(frame(payload));
    } catch (error) {
      throw this._sendFailed(error);
    }
    this.stats.messagesSent += 1;
    this.stats.bytesSent += payload.length;
  }

  /**
   * The next message. Callers waiting at the same time get successive messages, in call order.
   * @param {{timeoutMs?: number}} [options]
   * @throws {ChannelClosedError} after the peer's FIN (code null), a reset (its code), a local
   *   close or abort, or a framing error (TRUNCATED or MESSAGE_TOO_LARGE; the channel was reset).
   * @throws {DecodeError} this message did not decode; the next call gets the next message.
   * @throws {MessagingTimeoutError} nothing within timeoutMs (nothing is lost).
   */
  receive({ timeoutMs } = {}) {
    return this._puller.next(timeoutMs, `receive on channel "${this.name}"`);
  }

  /**
   * The messages until the channel ends normally (the peer's FIN, a close, code 0, the session's
   * end). Other ends, and a DecodeError, are thrown (iterating again goes on after a DecodeError).
   */
  async *[Symbol.asyncIterator]() {
    yield* receiveUntil(
      () => this.receive(),
      (error) => error instanceof ChannelClosedError && (error.code === null || error.code === CODES.CLOSED),
    );
  }

  /**
   * Close: FIN on our direction after the messages already sent, STOP_SENDING with code 0 on
   * the peer's. Messages the peer still had in flight are discarded. Idempotent.
   */
  async close() {
    if (this._localEnd) return;
    this._finish(new ChannelClosedError(`channel "${this.name}" was closed`, { code: CODES.CLOSED }), true);
    const closing = this._writer.close().catch(ignore);
    await this._bytes.cancel(streamError(CODES.CLOSED));
    await closing;
  }

  /**
   * Abort: reset our direction and stop the peer's, both with `code` (default 0).
   * @throws {RangeError} this browser cannot send `code` (Chromium sends 0 to 255 only).
   */
  async abort(code = CODES.CLOSED) {
    if (!Number.isInteger(code) || code < 0 || code > 0xffffffff || carrying(code) === null) {
      throw new RangeError(`this browser cannot send the stream error code ${code}`);
    }
    if (this._localEnd) return;
    this._finish(
      new ChannelClosedError(`channel "${this.name}" was aborted with ${codeName(code)}`, { code }),
      true,
    );
    await this._resetBoth(code);
  }

  _finish(error, discard) {
    this._localEnd = error;
    this._sendError ??= error;
    this._puller.end(error, discard);
    for (const callback of this._onEnd.splice(0)) callback(this);
  }

  _resetBoth(code) {
    const resetting = this._writer.abort(streamError(code)).catch(ignore);
    return Promise.all([resetting, this._bytes.cancel(streamError(code))]);
  }

  _sendFailed(error) {
    if (!this._sendError) {
      const code = streamErrorCode(error);
      const why = failureText(error, code, "stopped");
      this._sendError = new ChannelClosedError(`channel "${this.name}" cannot send: ${why}`, {
        code,
        cause: error,
      });
    }
    return this._sendError;
  }

  async _readItem() {
    let payload;
    try {
      payload = await this._bytes.readFrame(this.maxMessageSize);
    } catch (error) {
      return { end: this._readFailed(error) };
    }
    if (payload === null) {
      return { end: new ChannelClosedError(`channel "${this.name}" was closed by the peer`) };
    }
    return this._decode(payload);
  }

  _decode(payload) {
    this.stats.bytesReceived += payload.length;
    try {
      const value = this._codec.decode(payload);
      this.stats.messagesReceived += 1;
      return { value };
    } catch (cause) {
      this.stats.decodeErrors += 1;
      const what = `a ${this.codec} message of ${payload.length} bytes did not decode`;
      return { error: new DecodeError(`channel "${this.name}": ${what}`, { cause }) };
    }
  }

  _readFailed(error) {
    if (this._localEnd) return this._localEnd;
    if (error instanceof FramingError) {
      this.stats.protocolErrors += 1;
      const failure = new ChannelClosedError(`channel "${this.name}": ${error.message}`, {
        code: error.code,
      });
      this._finish(failure, false);
      this._resetBoth(error.code);
      return failure;
    }
    const code = streamErrorCode(error);
    const why = failureText(error, code, "reset");
    return new ChannelClosedError(`channel "${this.name}" ended: ${why}`, { code, cause: error });
  }
}

// ------------------------------------------------------------------------------------ datagrams

/**
 * Messages over the session's datagrams: `codec id (1 byte) + payload`, unreliable, unordered.
 * Invalid datagrams (empty, unknown codec, undecodable) are dropped and counted.
 * `stats` = {sent, received, droppedInvalid}; `maxMessageSize` = the largest payload that fits.
 */
export class DatagramMessages {
  constructor(wt) {
    this._wt = wt;
    this._writer = null;
    this._reader = null;
    this.stats = { sent: 0, received: 0, droppedInvalid: 0 };
    this._puller = new Puller(() => this._readItem());
  }

  get maxMessageSize() {
    const limit = this._wt.datagrams.maxDatagramSize;
    return typeof limit === "number" ? Math.max(0, limit - 1) : null;
  }

  /**
   * Send one message in one datagram (it may be lost).
   * @param {*} value a JSON value, or bytes with codec "bytes".
   * @param {{codec?: "json"|"bytes"}} [options]
   * @throws {MessageTooLargeError} the datagram would exceed the session's datagram size limit.
   */
  async send(value, { codec = "json" } = {}) {
    const chosen = codecNamed(codec);
    const payload = chosen.encode(value);
    const limit = this.maxMessageSize;
    if (limit !== null && payload.length > limit) {
      throw tooLarge(`a datagram message of ${payload.length} bytes`, `the datagram limit of ${limit}`);
    }
    this._writer ??= this._wt.datagrams.writable.getWriter();
    await this._writer.write(prefixed(Uint8Array.of(chosen.id), payload));
    this.stats.sent += 1;
  }

  /**
   * The next valid datagram message (a Uint8Array for the bytes codec).
   * @param {{timeoutMs?: number}} [options]
   * @throws {MessagingTimeoutError} none within timeoutMs.
   * @throws {ChannelClosedError} the session's datagrams ended (or the messenger was closed).
   */
  receive({ timeoutMs } = {}) {
    return this._puller.next(timeoutMs, "datagram receive");
  }

  /** Datagram messages until the session ends. */
  async *[Symbol.asyncIterator]() {
    yield* receiveUntil(() => this.receive(), (error) => error instanceof ChannelClosedError);
  }

  _close() {
    this._puller.end(new ChannelClosedError("the messenger is closed", { code: CODES.CLOSED }));
    for (const lock of [this._reader, this._writer]) {
      try {
        lock?.releaseLock();
      } catch {
        // still in use: the session's end releases it
      }
    }
  }

  async _readItem() {
    this._reader ??= this._wt.datagrams.readable.getReader();
    for (;;) {
      let result;
      try {
        result = await this._reader.read();
      } catch (cause) {
        return { end: new ChannelClosedError("the session's datagrams ended", { cause }) };
      }
      if (result.done) return { end: new ChannelClosedError("the session's datagrams ended") };
      const item = this._decode(result.value);
      if (item) return item;
    }
  }

  _decode(data) {
    const codec = data.length > 0 ? CODECS_BY_ID[data[0]] : undefined;
    if (codec) {
      try {
        const value = codec.decode(data.subarray(1));
        this.stats.received += 1;
        return { value };
      } catch {
        // an undecodable payload is dropped like an unknown codec
      }
    }
    this.stats.droppedInvalid += 1;
    return null;
  }
}

// ------------------------------------------------------------------------------------ messenger

/** The opener's hello, checked; throws on anything malformed. */
function parseHello(payload) {
  const hello = decodeJson(payload);
  if (!isObject(hello)) throw new TypeError("the hello is not a JSON object");
  checkChannelName(hello.channel);
  if (typeof hello.codec !== "string") throw new TypeError("the hello names no codec");
  return { channel: hello.channel, codec: hello.codec, maxMessageSize: parseLimit(hello.max_message_size) };
}

/** The acceptor's answer to a hello naming `codec`; throws on anything malformed. */
function parseAccept(payload, codec) {
  const accept = decodeJson(payload);
  if (!isObject(accept) || accept.codec !== codec) {
    throw new TypeError(`the accept frame does not name ${codec}`);
  }
  return { maxMessageSize: parseLimit(accept.max_message_size) };
}

function parseLimit(value) {
  if (value === undefined) return DEFAULT_MAX_MESSAGE_SIZE;
  if (!Number.isSafeInteger(value) || value < 0) throw new TypeError("bad max_message_size");
  return value;
}

/** Reset a stream's sending side (`sink`: its writable or writer) and stop its receiving side. */
function resetBoth(sink, bytes, code) {
  sink.abort(streamError(code)).catch(ignore);
  bytes.cancel(streamError(code));
}

function refuse(stream, bytes, code) {
  resetBoth(stream.writable, bytes, code);
}

/** Streams waiting to be taken, at most `limit`; iterators and producers wait on it. */
class StreamQueue {
  constructor(limit) {
    this.limit = limit;
    this._items = [];
    this._wake = [];
  }

  get full() {
    return this._items.length >= this.limit;
  }

  push(item) {
    if (this.full) return false;
    this._items.push(item);
    this._notify();
    return true;
  }

  shift() {
    const item = this._items.shift();
    this._notify();
    return item;
  }

  get length() {
    return this._items.length;
  }

  /** Resolves on the next push, shift or wakeAll(). */
  changed() {
    return new Promise((resolve) => this._wake.push(resolve));
  }

  _notify() {
    for (const wake of this._wake.splice(0)) wake();
  }

  wakeAll() {
    this._notify();
  }
}

/**
 * The message layer of one WebTransport session: named channels, the plain streams beside them,
 * datagram messages and RPC. It takes over the session's incoming bidirectional streams (and its
 * incoming unidirectional ones once incomingStreams() is called).
 *
 * Peer-opened channels are routed by name: a name registered with route() is accepted and its
 * handler runs; a name that acceptChannel() may take (any name while no route is registered and
 * `channels` is null, else only the names in `channels`) waits, at most `maxPendingChannels`
 * of them, until accepted; anything else is refused: an unknown name with CHANNEL_UNKNOWN, a
 * full queue with CHANNEL_REFUSED, a codec other than json and bytes with CODEC_UNSUPPORTED, a
 * malformed or late hello with BAD_HELLO.
 */
export class Messenger {
  /**
   * @param {WebTransport} wt the session (ready or not).
   * @param {object} [options]
   * @param {number} [options.maxMessageSize] the largest message this side accepts (bytes).
   * @param {string[]|null} [options.channels] names acceptChannel() may take once routes exist.
   * @param {number} [options.helloTimeoutMs] how long a peer stream may take to show its hello.
   * @param {number} [options.maxPendingChannels] peer channels (and, separately, plain streams)
   *   waiting to be taken, at most; more are refused with CHANNEL_REFUSED.
   */
  constructor(
    wt,
    {
      maxMessageSize = DEFAULT_MAX_MESSAGE_SIZE,
      channels = null,
      helloTimeoutMs = 10000,
      maxPendingChannels = 16,
    } = {},
  ) {
    this._wt = wt;
    this._maxMessageSize = maxMessageSize;
    this._allowed = channels === null ? null : new Set(channels);
    this._helloTimeoutMs = helloTimeoutMs;
    this._maxPending = maxPendingChannels;
    this._routes = new Map();
    this._pending = []; // peer channels not accepted yet: {stream, bytes, hello}
    this._acceptors = []; // acceptChannel() calls waiting: {name, resolve, reject, timer}
    this._plain = new StreamQueue(maxPendingChannels);
    this._open = new Set();
    this._ended = null; // the error for callers once the session or the messenger ended
    this._uniReader = null;
    /** @type {DatagramMessages} messages over the session's datagrams. */
    this.datagrams = new DatagramMessages(wt);
    this._bidiReader = wt.incomingBidirectionalStreams.getReader();
    this._acceptStreams();
  }

  /**
   * Open a channel; resolves once the peer has accepted it.
   * @param {string} name the channel's name (1 to 256 characters).
   * @param {{codec?: "json"|"bytes", timeoutMs?: number}} [options]
   * @returns {Promise<Channel>}
   * @throws {ChannelRefusedError} the peer refused it (`code`: CHANNEL_UNKNOWN, ...).
   * @throws {ChannelClosedError} the stream or the session failed before the accept frame.
   * @throws {MessagingTimeoutError} not accepted within timeoutMs (the stream is aborted).
   */
  async openChannel(name, { codec = "json", timeoutMs } = {}) {
    checkChannelName(name);
    const chosen = codecNamed(codec);
    if (this._ended) throw this._ended;
    const stream = await this._createStream();
    const writer = stream.writable.getWriter();
    const hello = encodeJson({ channel: name, codec: chosen.name, max_message_size: this._maxMessageSize });
    const wrote = writer.write(prefixed(PREAMBLE, frame(hello)));
    wrote.catch(ignore);
    const bytes = new ByteReader(stream.readable.getReader());
    const waiting = readAccept(bytes, chosen.name);
    const accept = await (timeoutMs == null ? waiting : deadline(waiting, timeoutMs, null));
    const opening = { name, writer, bytes, wrote };
    if (accept === null) throw this._openTimedOut(opening, timeoutMs);
    if (accept.error) throw await this._openFailed(opening, accept.error);
    return this._channel({ name, codec: chosen, writer, bytes, peerMaxMessageSize: accept.maxMessageSize });
  }

  /**
   * The next channel the peer opened (with that name, if given), accepted now.
   * @param {string|null} [name]
   * @param {{timeoutMs?: number}} [options]
   * @returns {Promise<Channel>}
   * @throws {MessagingTimeoutError} none within timeoutMs.
   * @throws {ChannelClosedError} the session ended or the messenger was closed.
   */
  async acceptChannel(name = null, { timeoutMs } = {}) {
    const index = this._pending.findIndex((pending) => name === null || pending.hello.channel === name);
    if (index >= 0) return this._adopt(this._pending.splice(index, 1)[0]);
    if (this._ended) throw this._ended;
    return new Promise((resolve, reject) => {
      const acceptor = { name, resolve, reject, timer: null };
      if (timeoutMs != null) {
        acceptor.timer = setTimeout(() => {
          this._acceptors = this._acceptors.filter((other) => other !== acceptor);
          reject(
            new MessagingTimeoutError(
              `no channel ${JSON.stringify(name ?? "")} opened within ${timeoutMs} ms`,
            ),
          );
        }, timeoutMs);
      }
      this._acceptors.push(acceptor);
    });
  }

  /**
   * Run `handler(channel)` for every channel of that name the peer opens. When the handler's
   * promise settles, the channel is closed (aborted with code 0 if it rejected): a handler that
   * keeps a conversation going awaits its end (for example `await rpcPeer.closed`).
   * Once a route exists, names neither routed nor listed in `channels` are refused.
   * @returns {Messenger} this messenger.
   */
  route(name, handler) {
    checkChannelName(name);
    if (typeof handler !== "function") throw new TypeError("a route handler is a function");
    this._routes.set(name, handler);
    return this;
  }

  /**
   * The peer's streams that are not channels, bytes intact: bidirectional ones without the
   * preamble as {readable, writable, bidirectional: true}, unidirectional ones as
   * {readable, writable: null, bidirectional: false}. Ends when the session or messenger ends.
   * Unidirectional streams are read from the session only while there is room in the queue.
   */
  async *incomingStreams() {
    this._startUni();
    for (;;) {
      if (this._plain.length > 0) yield this._plain.shift();
      else if (this._ended) return;
      else await this._plain.changed();
    }
  }

  /**
   * Open (or, with open=false, accept) a channel for JSON-RPC and wrap it in an RpcPeer.
   * @param {object} [options] `name` ("rpc"), `open` (true), `codec` ("json", the only one
   *   here), `timeoutMs`, and the RpcPeer options (methods, maxPendingCalls,
   *   maxConcurrentHandlers, exposeErrors).
   * @returns {Promise<RpcPeer>}
   */
  async rpc({ name = "rpc", open = true, codec = "json", timeoutMs, ...options } = {}) {
    if (codec !== "json") throw new TypeError("RPC in the browser uses the json codec");
    const channel = open
      ? await this.openChannel(name, { codec, timeoutMs })
      : await this.acceptChannel(name, { timeoutMs });
    return new RpcPeer(channel, options);
  }

  /** Close every channel of this messenger, refuse the waiting ones, stop reading. Not the session. */
  async close() {
    this._end(new ChannelClosedError("the messenger is closed", { code: CODES.CLOSED }));
    this.datagrams._close();
    for (const reader of [this._bidiReader, this._uniReader]) {
      try {
        reader?.releaseLock(); // rejects the pending read: the loops end
      } catch {
        reader.cancel().catch(ignore);
      }
    }
    await Promise.all([...this._open].map((channel) => channel.close()));
  }

  // ---------------------------------------------------------------------------- opening

  async _createStream() {
    try {
      return await this._wt.createBidirectionalStream();
    } catch (cause) {
      throw new ChannelClosedError(`cannot open a stream: ${cause?.message ?? cause}`, { cause });
    }
  }

  _openTimedOut({ name, writer, bytes }, timeoutMs) {
    resetBoth(writer, bytes, CODES.CLOSED);
    return new MessagingTimeoutError(`channel "${name}" was not accepted within ${timeoutMs} ms`);
  }

  /** The error for an opening that failed before the accept frame (a refusal, most often). */
  async _openFailed({ name, writer, bytes, wrote }, error) {
    if (error instanceof FramingError || error instanceof TypeError || error instanceof SyntaxError) {
      const code = error.code === null ? CODES.CLOSED : CODES.BAD_HELLO; // FIN before the accept: CLOSED
      resetBoth(writer, bytes, code);
      return new ChannelClosedError(`channel "${name}" could not be opened: ${error.message}`, {
        code,
        cause: error,
      });
    }
    // A refusal resets the peer's direction and stops ours; the code may show on either side.
    const writeError = await deadline(failureOf(wrote), 100, null);
    const code = streamErrorCode(error) ?? streamErrorCode(writeError);
    writer.abort(streamError(code ?? CODES.CLOSED)).catch(ignore);
    if (REFUSALS.has(code)) {
      const message = `the peer refused channel "${name}": ${codeName(code)}`;
      return new ChannelRefusedError(message, { code, cause: error });
    }
    const why = failureText(error, code, "reset");
    return new ChannelClosedError(`channel "${name}" could not be opened: ${why}`, { code, cause: error });
  }

  /** A new channel of this messenger (closed by close()). */
  _channel(options) {
    const channel = new Channel({ ...options, maxMessageSize: this._maxMessageSize });
    this._open.add(channel);
    channel._onEnd.push((ended) => this._open.delete(ended));
    if (this._ended) channel.close();
    return channel;
  }

  // ---------------------------------------------------------------------------- accepting

  /** Accept a waiting peer channel: write the accept frame and hand the channel out. */
  _adopt({ stream, bytes, hello }) {
    const writer = stream.writable.getWriter();
    const accept = encodeJson({ codec: hello.codec, max_message_size: this._maxMessageSize });
    writer.write(frame(accept)).catch(ignore);
    const codec = codecNamed(hello.codec);
    return this._channel({
      name: hello.channel,
      codec,
      writer,
      bytes,
      peerMaxMessageSize: hello.maxMessageSize,
    });
  }

  async _acceptStreams() {
    try {
      for (;;) {
        const { value: stream, done } = await this._bidiReader.read();
        if (done) break;
        this._classify(stream).catch(ignore);
      }
    } catch {
      // the session ended, or close() released the reader
    }
    this._end(new ChannelClosedError("the session has ended"));
  }

  _startUni() {
    if (this._uniReader || this._ended) return;
    this._uniReader = this._wt.incomingUnidirectionalStreams.getReader();
    this._acceptUni().catch(ignore);
  }

  /** Take the peer's unidirectional streams while the queue has room (the browser holds the rest). */
  async _acceptUni() {
    while (!this._ended) {
      if (this._plain.full) {
        await this._plain.changed();
        continue;
      }
      const { value: readable, done } = await this._uniReader.read();
      if (done) return;
      this._plain.push({ readable, writable: null, bidirectional: false });
    }
  }

  /** A peer's bidirectional stream: a channel (routed, queued or refused) or a plain stream. */
  async _classify(stream) {
    const bytes = new ByteReader(stream.readable.getReader());
    const quiet = new AbortController();
    const shown = await deadline(
      bytes.fill(PREAMBLE.length, quiet.signal),
      this._helloTimeoutMs,
      false,
    ).catch(() => null);
    quiet.abort(); // a quiet stream's sniffing stops after its current read
    if (shown === null) return; // reset before it showed anything: nothing to hand over
    if (!shown || !bytes.startsWith(PREAMBLE)) {
      const plain = { readable: bytes.toReadable(), writable: stream.writable, bidirectional: true };
      if (!this._plain.push(plain)) refuse(stream, bytes, CODES.CHANNEL_REFUSED);
      return;
    }
    bytes.take(PREAMBLE.length);
    const hello = await deadline(readHello(bytes), this._helloTimeoutMs, null);
    if (hello === null) refuse(stream, bytes, CODES.BAD_HELLO);
    else this._route({ stream, bytes, hello });
  }

  _route(pending) {
    const { channel, codec } = pending.hello;
    const refusal = this._refusal(channel, codec);
    if (refusal !== null) refuse(pending.stream, pending.bytes, refusal);
    else if (this._routes.has(channel)) this._runRoute(this._routes.get(channel), this._adopt(pending));
    else this._offer(pending);
  }

  _refusal(name, codec) {
    if (!Object.hasOwn(CODECS, codec)) return CODES.CODEC_UNSUPPORTED;
    if (this._ended) return CODES.CHANNEL_REFUSED;
    if (this._routes.has(name)) return null;
    const listed = this._allowed === null ? this._routes.size === 0 : this._allowed.has(name);
    return listed ? null : CODES.CHANNEL_UNKNOWN;
  }

  /** Hand a peer channel to a waiting acceptChannel() call, or queue it. */
  _offer(pending) {
    const name = pending.hello.channel;
    const acceptor = this._acceptors.find((waiting) => waiting.name === null || waiting.name === name);
    if (acceptor) {
      this._acceptors = this._acceptors.filter((other) => other !== acceptor);
      clearTimeout(acceptor.timer);
      acceptor.resolve(this._adopt(pending));
    } else if (this._pending.length >= this._maxPending) {
      refuse(pending.stream, pending.bytes, CODES.CHANNEL_REFUSED);
    } else {
      this._pending.push(pending);
    }
  }

  async _runRoute(handler, channel) {
    try {
      await handler(channel);
    } catch (error) {
      console.error(`messaging: the handler of channel "${channel.name}" failed`, error);
      await channel.abort(CODES.CLOSED);
      return;
    }
    await channel.close();
  }

  /** The session or the messenger ended: fail the waiters, refuse what waits, end the iterators. */
  _end(error) {
    if (this._ended) return;
    this._ended = error;
    for (const acceptor of this._acceptors.splice(0)) {
      clearTimeout(acceptor.timer);
      acceptor.reject(error);
    }
    for (const { stream, bytes } of this._pending.splice(0)) refuse(stream, bytes, CODES.CHANNEL_REFUSED);
    this._plain.wakeAll();
  }
}

/** The accept frame ({maxMessageSize}), or {error} when the stream failed or broke the rules. */
async function readAccept(bytes, codec) {
  try {
    const payload = await bytes.readFrame(MAX_HELLO_SIZE);
    if (payload === null) {
      return { error: new FramingError(null, "the stream ended before the accept frame") };
    }
    return parseAccept(payload, codec);
  } catch (error) {
    return { error };
  }
}

/** The hello after the preamble, or null if it is malformed, too long or cut short. */
async function readHello(bytes) {
  try {
    const payload = await bytes.readFrame(MAX_HELLO_SIZE);
    return payload === null ? null : parseHello(payload);
  } catch {
    return null;
  }
}

// ------------------------------------------------------------------------------------ rpc

function resultResponse(id, result) {
  return { jsonrpc: JSONRPC, id, result: result === undefined ? null : result };
}

function errorResponse(id, code, message, data) {
  const error = data === undefined ? { code, message } : { code, message, data };
  return { jsonrpc: JSONRPC, id, error };
}

function validId(id) {
  return typeof id === "string" || Number.isSafeInteger(id);
}

function idOf(message) {
  return isObject(message) && validId(message.id) ? message.id : null;
}

/** What kind of JSON-RPC message this is: "request", "response" or "invalid". */
function kindOf(message) {
  if (!isObject(message) || message.jsonrpc !== JSONRPC) return "invalid";
  if ("method" in message) {
    const badId = "id" in message && message.id !== null && !validId(message.id);
    const badParams = "params" in message && typeof message.params !== "object";
    return typeof message.method !== "string" || badId || badParams ? "invalid" : "request";
  }
  return "result" in message || "error" in message ? "response" : "invalid";
}

function toRpcError(error) {
  if (isObject(error) && Number.isSafeInteger(error.code)) {
    return new RpcError(error.code, String(error.message ?? ""), error.data);
  }
  return new RpcError(RPC_ERRORS.INTERNAL_ERROR, "the peer sent a malformed error object", error);
}

/** A reply whose results are replaced by INTERNAL_ERROR (they could not be sent). */
function withoutResults(reply) {
  const one = (item) =>
    "result" in item
      ? errorResponse(item.id, RPC_ERRORS.INTERNAL_ERROR, "Internal error: the result cannot be sent")
      : item;
  return Array.isArray(reply) ? reply.map(one) : one(reply);
}

/**
 * JSON-RPC 2.0 over a channel, both ways: the peer's requests run this side's methods, and
 * call() / notify() send requests to the peer. A call that times out or is aborted sends
 * rpc.cancel; the peer's rpc.cancel aborts the handler's signal and no answer is sent.
 *
 * Every message is read as it arrives (responses always get through): at most
 * maxConcurrentHandlers of the peer's calls run at once, more are answered TOO_MANY_CALLS (-32000)
 * at once. Batches are answered with an array. Nothing the peer sends ends the channel.
 *
 * `stats` = {callsSent, callsReceived, errorsSent, unknownResponses, lateResponses, rejectedBusy,
 * cancelledByPeer}. `closed` is a promise resolving with the ChannelClosedError that ended it.
 */
export class RpcPeer {
  /**
   * @param {Channel} channel a json channel (it belongs to the peer from now on).
   * @param {object} [options]
   * @param {Object<string, Function>|Map<string, Function>} [options.methods] methods exposed from
   *   the first request on (method() adds more).
   * @param {number} [options.maxPendingCalls] calls of this side waiting for an answer, at most
   *   (more reject with RpcError TOO_MANY_CALLS at once).
   * @param {number} [options.maxConcurrentHandlers] the peer's calls running here, at most.
   * @param {boolean} [options.exposeErrors] put an exception's text into the INTERNAL_ERROR answer.
   */
  constructor(
    channel,
    { methods = {}, maxPendingCalls = 64, maxConcurrentHandlers = 64, exposeErrors = false } = {},
  ) {
    this.channel = channel;
    this.stats = {
      callsSent: 0,
      callsReceived: 0,
      errorsSent: 0,
      unknownResponses: 0,
      lateResponses: 0,
      rejectedBusy: 0,
      cancelledByPeer: 0,
    };
    this._methods = new Map();
    const entries = methods instanceof Map ? methods : Object.entries(methods);
    for (const [name, handler] of entries) this.method(name, handler);
    this._maxPending = maxPendingCalls;
    this._maxHandlers = maxConcurrentHandlers;
    this._exposeErrors = exposeErrors;
    this._calls = new Map(); // our id -> {resolve, reject, cleanup}
    this._running = new Map(); // the peer's id (a symbol for a notification) -> AbortController
    this._gaveUp = new Set(); // our ids given up on: their late answers are not "unknown"
    this._writes = new Set();
    this._nextId = 1;
    this._end = null;
    this.closed = this._readLoop();
  }

  /**
   * Expose a method. `handler(params, {signal, id, peer})` returns the result or a promise of it;
   * `params` is the request's array or object (undefined without params). Throw an RpcError to
   * answer with it (RPC_ERRORS.INVALID_PARAMS for bad params); any other exception is answered
   * INTERNAL_ERROR. `signal` aborts when the caller sent rpc.cancel or the channel ended.
   * @returns {RpcPeer} this peer.
   */
  method(name, handler) {
    if (typeof name !== "string" || name.startsWith("rpc.")) {
      throw new TypeError(`cannot expose a method named ${name}`);
    }
    if (typeof handler !== "function") throw new TypeError("a method handler is a function");
    this._methods.set(name, handler);
    return this;
  }

  /**
   * Call a method of the peer; resolves with its result.
   * @param {string} method
   * @param {Array|Object} [params]
   * @param {{timeoutMs?: number, signal?: AbortSignal}} [options]
   * @throws {RpcError} the peer answered with an error (`code`, `message`, `data`), or
   *   TOO_MANY_CALLS when maxPendingCalls calls are already waiting.
   * @throws {RpcTimeoutError} no answer within timeoutMs (rpc.cancel was sent).
   * @throws the signal's reason when it aborts (rpc.cancel was sent).
   * @throws {ChannelClosedError} the channel ended before the answer.
   */
  async call(method, params, { timeoutMs, signal } = {}) {
    const request = this._request(method, params);
    if (this._end) throw this._end;
    signal?.throwIfAborted();
    if (this._calls.size >= this._maxPending) {
      throw new RpcError(
        RPC_ERRORS.TOO_MANY_CALLS,
        `${this._calls.size} calls are already waiting for an answer`,
      );
    }
    const id = this._nextId++;
    request.id = id;
    return new Promise((resolve, reject) => {
      const onAbort = () => this._giveUp(id, signal.reason);
      const expired = () =>
        this._giveUp(id, new RpcTimeoutError(`${method}: no answer within ${timeoutMs} ms`));
      const timer = timeoutMs == null ? null : setTimeout(expired, timeoutMs);
      signal?.addEventListener("abort", onAbort, { once: true });
      const cleanup = () => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
      };
      this._calls.set(id, { resolve, reject, cleanup });
      this.stats.callsSent += 1;
      this.channel.send(request).catch((error) => this._settle(id, { error }));
    });
  }

  /** Send a notification (a request without id; never answered). Resolves once written. */
  async notify(method, params) {
    const message = this._request(method, params);
    if (this._end) throw this._end;
    await this.channel.send(message);
  }

  /** Close the channel: waiting calls reject with ChannelClosedError, running handlers abort. */
  async close() {
    this._shutdown(
      new ChannelClosedError(`RPC channel "${this.channel.name}" was closed`, { code: CODES.CLOSED }),
    );
    await this.channel.close();
    await this.closed;
  }

  // ---------------------------------------------------------------------------- calling

  _request(method, params) {
    if (typeof method !== "string") throw new TypeError("a method name is a string");
    if (params === undefined) return { jsonrpc: JSONRPC, method };
    if (typeof params !== "object" || params === null) {
      throw new TypeError("params are an array or an object");
    }
    return { jsonrpc: JSONRPC, method, params };
  }

  _giveUp(id, error) {
    if (!this._settle(id, { error })) return;
    this._gaveUp.add(id);
    if (this._gaveUp.size > 1024) this._gaveUp.delete(this._gaveUp.values().next().value);
    this.notify(CANCEL, { id }).catch(ignore);
  }

  /** Resolve or reject our call `id`; false if it is not waiting any more. */
  _settle(id, { value, error }) {
    const call = this._calls.get(id);
    if (!call) return false;
    this._calls.delete(id);
    call.cleanup();
    if (error) call.reject(error);
    else call.resolve(value);
    return true;
  }

  _onResponse(message) {
    const outcome = "error" in message ? { error: toRpcError(message.error) } : { value: message.result };
    if (this._settle(message.id, outcome)) return;
    if (this._gaveUp.delete(message.id)) this.stats.lateResponses += 1;
    else this.stats.unknownResponses += 1;
  }

  // ---------------------------------------------------------------------------- answering

  async _readLoop() {
    // Start after the current task: methods added right after creation see every request.
    await new Promise((resolve) => setTimeout(resolve, 0));
    for (;;) {
      let message;
      try {
        message = await this.channel.receive();
      } catch (error) {
        if (!(error instanceof DecodeError)) return this._stop(error);
        this._write(errorResponse(null, RPC_ERRORS.PARSE_ERROR, "Parse error"));
        await this._throttle();
        continue;
      }
      this._dispatch(message);
      await this._throttle();
    }
  }

  _stop(error) {
    this._shutdown(error);
    this.channel.close();
    return this._end;
  }

  /** Wait while many answers are being written (a peer that does not read slows this side down). */
  async _throttle() {
    while (this._writes.size >= Math.max(16, this._maxHandlers)) await Promise.race(this._writes);
  }

  _dispatch(message) {
    if (!Array.isArray(message)) {
      this._handle(message)?.then((reply) => reply && this._write(reply));
    } else if (message.length === 0) {
      this._write(errorResponse(null, RPC_ERRORS.INVALID_REQUEST, "Invalid Request: empty batch"));
    } else {
      const answers = message.map((item) => this._handle(item) ?? null);
      Promise.all(answers).then((replies) => {
        const sent = replies.filter(Boolean);
        if (sent.length > 0) this._write(sent);
      });
    }
  }

  /** One message: a response settles a call, a request runs. Returns a promise of the reply, or null. */
  _handle(message) {
    const kind = kindOf(message);
    if (kind === "response") {
      this._onResponse(message);
      return null;
    }
    if (kind === "invalid") {
      return Promise.resolve(errorResponse(idOf(message), RPC_ERRORS.INVALID_REQUEST, "Invalid Request"));
    }
    const notification = !("id" in message);
    if (notification && message.method === CANCEL) {
      this._onCancel(message.params);
      return null;
    }
    const reply = this._refusal(message, notification);
    if (reply !== undefined) return reply && Promise.resolve(reply);
    return this._run(this._methods.get(message.method), message, notification);
  }

  /** The immediate answer (null for a notification) if the request cannot run; else undefined. */
  _refusal({ id, method }, notification) {
    if (!this._methods.has(method)) {
      return notification
        ? null
        : errorResponse(id, RPC_ERRORS.METHOD_NOT_FOUND, `Method not found: ${method}`);
    }
    if (this._running.size >= this._maxHandlers) {
      this.stats.rejectedBusy += 1;
      return notification ? null : errorResponse(id, RPC_ERRORS.TOO_MANY_CALLS, "Too many calls in flight");
    }
    if (!notification && this._running.has(id)) {
      return errorResponse(id, RPC_ERRORS.INVALID_REQUEST, "Invalid Request: an id already in use");
    }
    return undefined;
  }

  async _run(handler, { id, params }, notification) {
    const controller = new AbortController();
    const key = notification ? Symbol("notification") : id;
    this._running.set(key, controller);
    this.stats.callsReceived += 1;
    try {
      const result = await handler(params, { signal: controller.signal, id, peer: this });
      return notification || controller.signal.aborted ? null : resultResponse(id, result);
    } catch (error) {
      return notification || controller.signal.aborted ? null : this._errorFor(id, error);
    } finally {
      this._running.delete(key);
    }
  }

  _onCancel(params) {
    const controller = isObject(params) && validId(params.id) ? this._running.get(params.id) : undefined;
    if (!controller || controller.signal.aborted) return;
    this.stats.cancelledByPeer += 1;
    controller.abort(new RpcError(RPC_ERRORS.INTERNAL_ERROR, "the caller cancelled this call"));
  }

  _errorFor(id, error) {
    if (error instanceof RpcError) return errorResponse(id, error.code, error.message, error.data);
    console.error("messaging: an RPC method failed", error);
    const message = this._exposeErrors ? `Internal error: ${error?.message ?? error}` : "Internal error";
    return errorResponse(id, RPC_ERRORS.INTERNAL_ERROR, message);
  }

  /** Write a reply without waiting for it; results that cannot be sent become INTERNAL_ERROR once. */
  _write(reply, retry = true) {
    const errors = (Array.isArray(reply) ? reply : [reply]).filter((item) => "error" in item).length;
    const sending = this.channel.send(reply).then(
      () => {
        this.stats.errorsSent += errors;
      },
      (error) => {
        const unsendable = error instanceof MessageTooLargeError || error instanceof TypeError;
        if (unsendable && retry) this._write(withoutResults(reply), false);
      },
    );
    this._writes.add(sending);
    sending.finally(() => this._writes.delete(sending));
  }

  _shutdown(error) {
    if (this._end) return;
    const ended = error instanceof ChannelClosedError ? error : null;
    this._end =
      ended ?? new ChannelClosedError(`RPC channel "${this.channel.name}" ended: ${error}`, { cause: error });
    for (const id of [...this._calls.keys()]) this._settle(id, { error: this._end });
    for (const controller of this._running.values()) controller.abort(this._end);
  }
}

// ------------------------------------------------------------------------------------ topics

const PUBSUB_CHANNEL = "pubsub";
const MODES = ["reliable", "datagram"];

/** The error a hub's error object stands for: ForbiddenError, BrokerUnavailableError or RpcError. */
function pubsubError(error) {
  const plain = toRpcError(error);
  const kinds = {
    [PUBSUB_ERRORS.FORBIDDEN]: ForbiddenError,
    [PUBSUB_ERRORS.BROKER_UNAVAILABLE]: BrokerUnavailableError,
  };
  const Kind = kinds[plain.code];
  return Kind ? new Kind(plain.code, plain.message, plain.data) : plain;
}

function isCount(value) {
  return Number.isSafeInteger(value) && value >= 0;
}

/** A datagram message of a hub: exactly {topic, data}. */
function isTopicDatagram(value) {
  const keys = isObject(value) ? Object.keys(value) : [];
  return keys.length === 2 && keys.includes("topic") && keys.includes("data");
}

/**
 * A session's membership in the topics (rooms) of a pywebtransport.pubsub Hub: join, leave,
 * publish, presence and the messages of the joined topics; the browser's TopicClient. Made by
 * Topics.open() once the server attached the session to its hub (hub.attach(messenger)).
 *
 * It reads its "pubsub" channel itself: answers settle the calls, messages go into a queue of
 * `queueSize` that receive() takes from. While the queue is full the channel is not read, so flow
 * control holds reliable messages back in the hub, whose overflow policy then applies (announced
 * by a "dropped" event); datagram messages (topics joined with mode "datagram") that find the
 * queue full are dropped here and counted. Answers come on the same channel, behind the messages:
 * a call made while the queue is full waits until messages are taken.
 *
 * Events (CustomEvent, in `detail`): "dropped" {count}: messages the hub dropped for this session
 * because they did not fit in its queue there; "missed" {topic, count}: messages of a joined topic
 * that the hub's broker lost.
 *
 * `stats` = {received, dropped, missed, ignored}: messages taken from the channel and the
 * datagrams; messages lost (the hub's notices, plus datagram messages dropped here); messages the
 * hub reported missed; messages and datagram messages that were not the hub's. `closed` is a
 * promise resolving with the ChannelClosedError that ended the channel.
 *
 *   const topics = await Topics.open(messenger);
 *   topics.addEventListener("dropped", (event) => console.warn(`${event.detail.count} dropped`));
 *   await topics.join("room", { info: { name: "ada" } });
 *   await topics.publish("room", { text: "hello" }); // if the hub's authorize hook allows it
 *   for await (const { topic, data } of topics) console.log(topic, data);
 */
export class Topics extends EventTarget {
  /**
   * Open the "pubsub" channel to the server's hub.
   * @param {Messenger} messenger the session's messenger (its datagrams carry datagram-mode topics).
   * @param {{timeoutMs?: number, queueSize?: number}} [options] queueSize: messages waiting to be
   *   received, at most (1024).
   * @returns {Promise<Topics>}
   * @throws {ChannelRefusedError} the server's messenger does not take "pubsub" (no hub there).
   * @throws {MessagingTimeoutError} not accepted within timeoutMs.
   */
  static async open(messenger, { timeoutMs, queueSize = 1024 } = {}) {
    if (!Number.isSafeInteger(queueSize) || queueSize < 1) {
      throw new RangeError("queueSize must be at least 1");
    }
    const channel = await messenger.openChannel(PUBSUB_CHANNEL, { codec: "json", timeoutMs });
    return new Topics(messenger, channel, { queueSize });
  }

  /** Use Topics.open(). */
  constructor(messenger, channel, { queueSize = 1024 } = {}) {
    super();
    this.channel = channel;
    this.stats = { received: 0, dropped: 0, missed: 0, ignored: 0 };
    this._messenger = messenger;
    this._queueSize = queueSize;
    this._queue = []; // {topic, data} not taken yet
    this._receivers = []; // receive() calls waiting (only while the queue is empty)
    this._room = null; // set while the reader waits for room in the queue: wakes it
    this._calls = new Map(); // our id -> {resolve, reject, timer}
    this._nextId = 1;
    this._end = null;
    this._datagrams = null; // the datagram reader, from the first datagram-mode join on
    this.closed = this._read();
  }

  /**
   * Join `topic`: its messages arrive from now on. Joining again changes the mode and the info.
   * @param {string} topic 1 to 256 characters.
   * @param {{mode?: "reliable"|"datagram", info?: *, timeoutMs?: number}} [options] mode
   *   "datagram": the messages come as datagram messages, unordered and possibly lost; info: a
   *   JSON value shown with this session in presence lists.
   * @throws {ForbiddenError} the hub does not allow it.
   * @throws {BrokerUnavailableError} the hub's broker is away.
   * @throws {RpcError} another refusal (INVALID_PARAMS: a bad topic name).
   * @throws {MessagingTimeoutError} no answer within timeoutMs.
   * @throws {ChannelClosedError} the channel to the hub has ended.
   */
  async join(topic, { mode = "reliable", info = null, timeoutMs } = {}) {
    if (!MODES.includes(mode)) {
      throw new TypeError(`mode is "reliable" or "datagram", not ${JSON.stringify(mode)}`);
    }
    if (mode === "datagram") this._datagrams ??= this._readDatagrams();
    await this._call("pubsub.join", [topic, mode, info], timeoutMs);
  }

  /** Leave `topic` (nothing happens when this session is not in it). Throws like join(). */
  async leave(topic, { timeoutMs } = {}) {
    await this._call("pubsub.leave", [topic], timeoutMs);
  }

  /**
   * Publish `data` (a JSON value) on `topic` through the hub; resolves once its broker took it.
   * Throws like join(): ForbiddenError unless the hub's authorize hook allows this session to
   * publish there (without a hook, members may not publish); BrokerUnavailableError when nothing
   * was published; TypeError when `data` has no JSON form.
   */
  async publish(topic, data, { timeoutMs } = {}) {
    await this._call("pubsub.publish", [topic, data], timeoutMs);
  }

  /**
   * Who is in `topic` across the server's processes. Throws like join().
   * @returns {Promise<Array<{id: string, info: *}>>}
   */
  presence(topic, { timeoutMs } = {}) {
    return this._call("pubsub.presence", [topic], timeoutMs);
  }

  /**
   * The next message of a joined topic. Callers waiting at the same time get successive messages.
   * @param {{timeoutMs?: number}} [options]
   * @returns {Promise<{topic: string, data: *}>}
   * @throws {ChannelClosedError} the channel ended, and every message before the end was taken.
   * @throws {MessagingTimeoutError} nothing within timeoutMs (nothing is lost).
   */
  receive({ timeoutMs } = {}) {
    if (this._queue.length > 0) {
      const message = this._queue.shift();
      this._room?.();
      return Promise.resolve(message);
    }
    if (this._end) return Promise.reject(this._end);
    return new Promise((resolve, reject) => {
      const receiver = { resolve, reject, timer: null };
      if (timeoutMs != null) {
        receiver.timer = setTimeout(() => {
          this._receivers = this._receivers.filter((other) => other !== receiver);
          reject(new MessagingTimeoutError(`no topic message within ${timeoutMs} ms`));
        }, timeoutMs);
      }
      this._receivers.push(receiver);
    });
  }

  /** The messages of the joined topics ({topic, data}) until the channel to the hub ends. */
  async *[Symbol.asyncIterator]() {
    yield* receiveUntil(() => this.receive(), (error) => error instanceof ChannelClosedError);
  }

  /**
   * Close the channel: the hub takes this session out of every topic (and serves no other
   * "pubsub" channel of this session). Waiting calls and receive() calls reject with
   * ChannelClosedError; messages already queued can still be taken. The datagram reader, if
   * any, stops at the next datagram message. Idempotent.
   */
  async close() {
    this._finish(new ChannelClosedError("the topics were closed", { code: CODES.CLOSED }));
    await this.channel.close();
    await this.closed;
  }

  // ---------------------------------------------------------------------------- inside

  _call(method, params, timeoutMs) {
    if (this._end) return Promise.reject(this._end);
    const id = this._nextId++;
    return new Promise((resolve, reject) => {
      const expired = () =>
        this._settle(id, { error: new MessagingTimeoutError(`${method}: no answer within ${timeoutMs} ms`) });
      const timer = timeoutMs == null ? null : setTimeout(expired, timeoutMs);
      this._calls.set(id, { resolve, reject, timer });
      const request = { jsonrpc: JSONRPC, id, method, params };
      this.channel.send(request).catch((error) => this._settle(id, { error }));
    });
  }

  /** Resolve or reject our call `id`; false if it is not waiting (any more). */
  _settle(id, { value, error }) {
    const call = this._calls.get(id);
    if (!call) return false;
    this._calls.delete(id);
    clearTimeout(call.timer);
    if (error) call.reject(error);
    else call.resolve(value);
    return true;
  }

  async _read() {
    while (!this._end) {
      let message;
      try {
        message = await this.channel.receive();
      } catch (error) {
        if (error instanceof DecodeError) {
          this.stats.ignored += 1;
          continue;
        }
        this._finish(error);
        break;
      }
      await this._take(message);
    }
    return this._end;
  }

  async _take(message) {
    const method = isObject(message) ? message.method : null;
    const params = isObject(message) && Array.isArray(message.params) ? message.params : [];
    if (isObject(message) && !("method" in message)) {
      const outcome = "error" in message ? { error: pubsubError(message.error) } : { value: message.result };
      if (!this._settle(message.id, outcome)) this.stats.ignored += 1; // late or unknown
    } else if (method === "pubsub.message" && params.length === 2) {
      await this._put({ topic: params[0], data: params[1] });
    } else if (method === "pubsub.dropped" && isCount(params[0])) {
      this.stats.dropped += params[0];
      this.dispatchEvent(new CustomEvent("dropped", { detail: { count: params[0] } }));
    } else if (method === "pubsub.missed" && params.length === 2 && isCount(params[1])) {
      this.stats.missed += params[1];
      this.dispatchEvent(new CustomEvent("missed", { detail: { topic: params[0], count: params[1] } }));
    } else {
      this.stats.ignored += 1;
    }
  }

  /** Queue a reliable message, waiting (the channel unread) while the queue is full. */
  async _put(message) {
    while (this._queue.length >= this._queueSize && !this._end) {
      await new Promise((resolve) => {
        this._room = resolve;
      });
      this._room = null;
    }
    if (!this._end) this._offer(message);
  }

  /** Hand a message to a waiting receive() or queue it; false if the queue is full. */
  _offer(message) {
    const receiver = this._receivers.shift();
    if (receiver) {
      clearTimeout(receiver.timer);
      receiver.resolve(message);
    } else if (this._queue.length < this._queueSize) {
      this._queue.push(message);
    } else {
      return false;
    }
    this.stats.received += 1;
    return true;
  }

  async _readDatagrams() {
    const datagrams = this._messenger.datagrams;
    while (!this._end) {
      let value;
      try {
        value = await datagrams.receive();
      } catch {
        return; // the session's datagrams ended, or the messenger was closed
      }
      if (this._end) return;
      if (!isTopicDatagram(value)) this.stats.ignored += 1;
      else if (!this._offer({ topic: value.topic, data: value.data })) this.stats.dropped += 1;
    }
  }

  /** The channel ended (or close()): calls and waiting receivers fail, the reader stops. */
  _finish(error) {
    if (this._end) return;
    this._end = error;
    for (const id of [...this._calls.keys()]) this._settle(id, { error });
    for (const receiver of this._receivers.splice(0)) {
      clearTimeout(receiver.timer);
      receiver.reject(error);
    }
    this._room?.();
  }
}
