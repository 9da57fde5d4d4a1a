// pywebtransport messaging for browsers: channels, datagram messages and JSON-RPC 2.0 over a
// WebTransport session. It speaks version 1 of the message protocol (docs/messaging-protocol.md),
// the same as the Python package pywebtransport.messaging.
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
// receive(), so a slow reader leaves the bytes in the stream and the browser's flow control
// slows the sender down. Codecs: "json" and "bytes" ("msgpack" is refused).

const PREAMBLE = Uint8Array.of(0x50, 0x57, 0x4d, 0x01); // "PWM", version 1
const DEFAULT_MAX_MESSAGE_SIZE = 1 << 20;
const MAX_HELLO_SIZE = 4096;
const MAX_CHANNEL_NAME = 256;
const JSONRPC = "2.0";

/** Application error codes on channel streams (RESET_STREAM / STOP_SENDING). */
export const CODES = Object.freeze({
  CLOSED: 0,
  CHANNEL_UNKNOWN: 0x504d0001,
  CODEC_UNSUPPORTED: 0x504d0002,
  MESSAGE_TOO_LARGE: 0x504d0003,
  TRUNCATED: 0x504d0004,
  BAD_HELLO: 0x504d0005,
  CHANNEL_REFUSED: 0x504d0006,
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
 * Base class of every error of this module.
 * `code` is a stream error code (see CODES) or a JSON-RPC code where one applies, else null.
 */
export class MessagingError extends Error {
  constructor(message, { code = null, cause } = {}) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = new.target.name;
    this.code = code;
  }
}

/**
 * The channel has ended: closed by either side, reset, or its session is gone.
 * `code` is the stream error code when known (null after a plain FIN or when the browser did
 * not tell); the async iterator of a channel ends quietly for null and CODES.CLOSED.
 */
export class ChannelClosedError extends MessagingError {}

/** The peer refused to open the channel; `code` says why (CHANNEL_UNKNOWN, ...). */
export class ChannelRefusedError extends ChannelClosedError {}

/** A message is larger than the limit of the side that would receive it (nothing was sent). */
export class MessageTooLargeError extends MessagingError {}

/** One received message did not decode with the channel's codec; the channel goes on. */
export class DecodeError extends MessagingError {}

/** Nothing arrived in time (receive, accept, open). */
export class MessagingTimeoutError extends MessagingError {}

/**
 * A JSON-RPC error object: what call() rejects with when the peer answered with an error, and
 * what a method handler throws to send a particular error.
 */
export class RpcError extends MessagingError {
  constructor(code, message, data) {
    super(message, { code });
    this.data = data;
  }
}

/** A call got no answer within its timeoutMs (the peer was sent rpc.cancel). */
export class RpcTimeoutError extends MessagingTimeoutError {}

// ------------------------------------------------------------------------------------ helpers

function hex(code) {
  return `0x${code.toString(16).padStart(8, "0")}`;
}

/** The stream error code carried by a browser error, or null. */
function streamErrorCode(error) {
  const code = error?.streamErrorCode;
  return typeof code === "number" ? code : null;
}

/** An error for writer.abort() / reader.cancel() that makes the browser send `code`. */
function streamError(code) {
  if (typeof WebTransportError !== "function") {
    return Object.assign(new Error(`stream error ${hex(code)}`), { streamErrorCode: code });
  }
  const message = `stream error ${hex(code)}`;
  try {
    const error = new WebTransportError({ message, streamErrorCode: code }); // Chromium
    if (error.streamErrorCode === code) return error;
  } catch {
    // the current specification takes (message, options)
  }
  return new WebTransportError(message, { streamErrorCode: code });
}

function ignore() {}

/** Resolve to `fallback` if `promise` has not settled within `ms` (the promise runs on). */
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

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

function frame(payload) {
  const out = new Uint8Array(4 + payload.length);
  new DataView(out.buffer).setUint32(0, payload.length);
  out.set(payload, 4);
  return out;
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
  if (ArrayBuffer.isView(value)) {
    return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  }
  throw new TypeError("the bytes codec sends a Uint8Array, an ArrayBuffer or a typed array");
}

const CODECS = {
  bytes: { name: "bytes", id: 0, encode: toBytes, decode: (payload) => payload.slice() },
  json: { name: "json", id: 1, encode: encodeJson, decode: decodeJson },
};
const CODECS_BY_ID = [CODECS.bytes, CODECS.json];

function codecNamed(name) {
  const codec = Object.hasOwn(CODECS, name) ? CODECS[name] : undefined;
  if (!codec) throw new TypeError(`codec ${JSON.stringify(name)} is not available here`);
  return codec;
}

// ------------------------------------------------------------------------------------ reading

/** A failure of the framing rules; `code` is what the stream is reset with. */
class FramingError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

/**
 * Bytes of one readable stream, read only on demand. A read in progress is shared, so a caller
 * that gave up waiting (a timeout) loses nothing: the next caller gets the same chunk.
 */
class ByteReader {
  constructor(reader) {
    this._reader = reader;
    this._chunks = [];
    this.size = 0;
    this.ended = false;
    this._pending = null;
  }

  /** Read one more chunk into the buffer; false at the end of the stream. */
  pull() {
    if (this.ended) return Promise.resolve(false);
    this._pending ??= this._reader.read().then(
      ({ value, done }) => {
        this._pending = null;
        if (done) this.ended = true;
        else if (value.length > 0) this._chunks.push(value) && (this.size += value.length);
        return !done;
      },
      (error) => {
        this._pending = null;
        throw error;
      },
    );
    return this._pending;
  }

  /** Wait until `count` bytes are buffered; false if the stream ended first. */
  async fill(count) {
    while (this.size < count) {
      if (!(await this.pull())) return false;
    }
    return true;
  }

  /** The first `count` buffered bytes, removed from the buffer if `consume`. */
  copy(count, consume = true) {
    const out = new Uint8Array(count);
    let offset = 0;
    let index = 0;
    while (offset < count) {
      const chunk = this._chunks[index];
      const part = chunk.subarray(0, Math.min(chunk.length, count - offset));
      out.set(part, offset);
      offset += part.length;
      if (!consume) index += 1;
      else if (part.length === chunk.length) this._chunks.shift();
      else this._chunks[0] = chunk.subarray(part.length);
    }
    if (consume) this.size -= count;
    return out;
  }

  /** Everything buffered, removed from the buffer. */
  drain() {
    const chunks = this._chunks;
    this._chunks = [];
    this.size = 0;
    return chunks;
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
    const length = new DataView(this.copy(4, false).buffer).getUint32(0);
    if (length > limit) {
      throw new FramingError(CODES.MESSAGE_TOO_LARGE, `a frame of ${length} bytes is over the limit of ${limit}`);
    }
    if (!(await this.fill(4 + length))) {
      throw new FramingError(CODES.TRUNCATED, `the stream ended inside a frame of ${length} bytes`);
    }
    this.copy(4);
    return this.copy(length);
  }

  cancel(reason) {
    return this._reader.cancel(reason).catch(ignore);
  }

  /** A ReadableStream of the bytes still to come, starting with what is buffered. */
  toReadable() {
    return new ReadableStream({
      pull: async (controller) => {
        if (this.size === 0 && !(await this.pull())) {
          controller.close();
          return;
        }
        for (const chunk of this.drain()) controller.enqueue(chunk);
      },
      cancel: (reason) => this._reader.cancel(reason),
    });
  }
}

/**
 * Hands out items produced by `readItem()` to receive() calls, one read per waiting caller.
 * An item is {value}, {error} (for that item only) or {end} (no more items, ever). A caller that
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
    if (this._ready.length > 0) return settleItem(this._ready.shift());
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

  /** No more items: waiting and later callers get `error` (`discard` drops items not taken). */
  end(error, { discard = false } = {}) {
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

function settleItem(item) {
  return "error" in item ? Promise.reject(item.error) : Promise.resolve(item.value);
}

// ------------------------------------------------------------------------------------ channel

/**
 * One message channel over a bidirectional stream: ordered, reliable messages both ways.
 * Channels are made by Messenger.openChannel(), acceptChannel() and route().
 *
 * Properties: `name`, `codec` ("json" or "bytes"), `maxMessageSize` (this side's limit),
 * `peerMaxMessageSize` (the peer's), `closed` (true once it cannot carry messages any more), and
 * `stats` = {messagesSent, messagesReceived, bytesSent, bytesReceived, decodeErrors}, counting
 * payload bytes without framing.
 */
export class Channel {
  constructor({ name, codec, writer, bytes, maxMessageSize, peerMaxMessageSize }) {
    this.name = name;
    this.codec = codec.name;
    this.maxMessageSize = maxMessageSize;
    this.peerMaxMessageSize = peerMaxMessageSize;
    this.stats = { messagesSent: 0, messagesReceived: 0, bytesSent: 0, bytesReceived: 0, decodeErrors: 0 };
    this._codec = codec;
    this._writer = writer;
    this._bytes = bytes;
    this._sendError = null; // once set, every send rejects with it
    this._localEnd = null; // set by close() or abort()
    this._onEnd = [];
    this._puller = new Puller(() => this._readItem());
  }

  /** True once this side closed or aborted the channel, or it failed. */
  get closed() {
    return this._localEnd !== null || this._sendError !== null;
  }

  /**
   * Send one message; resolves when the stream's writer took it (the writer's backpressure).
   * Concurrent sends are written whole, in call order.
   * @throws {MessageTooLargeError} over the peer's max_message_size (the channel goes on).
   * @throws {TypeError} the codec cannot encode `value`.
   * @throws {ChannelClosedError} the channel has ended (`code`: the peer's STOP_SENDING code).
   */
  async send(value) {
    const payload = this._codec.encode(value);
    if (payload.length > this.peerMaxMessageSize) {
      throw new MessageTooLargeError(
        `a message of ${payload.length} bytes is over the peer's limit of ${this.peerMaxMessageSize}`,
        { code: CODES.MESSAGE_TOO_LARGE },
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
   * The next message. Callers waiting at the same time get successive messages in call order.
   * @param {{timeoutMs?: number}} options
   * @throws {ChannelClosedError} after the peer's FIN (code null), a reset (its code), a local
   *   close or abort, or a framing error (code TRUNCATED or MESSAGE_TOO_LARGE; the channel was
   *   reset).
   * @throws {DecodeError} this message did not decode; the next call gets the next message.
   * @throws {MessagingTimeoutError} nothing within timeoutMs.
   */
  receive({ timeoutMs } = {}) {
    return this._puller.next(timeoutMs, `receive on channel "${this.name}"`);
  }

  /**
   * Messages until the channel ends normally (the peer's FIN, a close, code 0, session end);
   * other ends and a DecodeError are thrown (iterating again goes on after a DecodeError).
   */
  async *[Symbol.asyncIterator]() {
    for (;;) {
      let message;
      try {
        message = await this.receive();
      } catch (error) {
        if (error instanceof ChannelClosedError && (error.code === null || error.code === CODES.CLOSED)) return;
        throw error;
      }
      yield message;
    }
  }

  /**
   * Close: FIN on our direction after the messages already sent, STOP_SENDING (code 0) on the
   * peer's. Messages the peer still had in flight are discarded. Idempotent.
   */
  async close() {
    if (this._localEnd) return;
    this._finish(new ChannelClosedError(`channel "${this.name}" was closed`, { code: CODES.CLOSED }));
    const closing = this._writer.close().catch(ignore);
    await this._bytes.cancel(streamError(CODES.CLOSED));
    await closing;
  }

  /** Abort: reset our direction and stop the peer's, both with `code` (default 0). */
  async abort(code = CODES.CLOSED) {
    if (this._localEnd) return;
    this._finish(new ChannelClosedError(`channel "${this.name}" was aborted with code ${hex(code)}`, { code }));
    await this._resetBoth(code);
  }

  _finish(error) {
    this._localEnd = error;
    this._sendError ??= error;
    this._puller.end(error, { discard: true });
    for (const callback of this._onEnd.splice(0)) callback(this);
  }

  _resetBoth(code) {
    return Promise.all([this._writer.abort(streamError(code)).catch(ignore), this._bytes.cancel(streamError(code))]);
  }

  _sendFailed(error) {
    if (!this._sendError) {
      const code = streamErrorCode(error);
      const why = code === null ? String(error?.message ?? error) : `the peer stopped it with code ${hex(code)}`;
      this._sendError = new ChannelClosedError(`channel "${this.name}" cannot send: ${why}`, { code, cause: error });
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
      const message = `channel "${this.name}": a ${this.codec} message of ${payload.length} bytes did not decode`;
      return { error: new DecodeError(message, { cause }) };
    }
  }

  _readFailed(error) {
    if (this._localEnd) return this._localEnd;
    if (error instanceof FramingError) {
      const failure = new ChannelClosedError(`channel "${this.name}": ${error.message}`, { code: error.code });
      this._finish(failure);
      this._resetBoth(error.code);
      return failure;
    }
    const code = streamErrorCode(error);
    const why = code === null ? String(error?.message ?? error) : `the peer reset it with code ${hex(code)}`;
    return new ChannelClosedError(`channel "${this.name}" ended: ${why}`, { code, cause: error });
  }
}

// ------------------------------------------------------------------------------------ datagrams

/**
 * Messages over the session's datagrams: `codec id (1 byte) + payload`, unreliable and unordered.
 * Invalid datagrams (empty, unknown codec, undecodable) are dropped and counted.
 * `stats` = {sent, received, droppedInvalid}.
 */
export class DatagramMessages {
  constructor(wt) {
    this._wt = wt;
    this._writer = null;
    this._reader = null;
    this.stats = { sent: 0, received: 0, droppedInvalid: 0 };
    this._puller = new Puller(() => this._readItem());
  }

  /** The largest payload one datagram message can carry (null if the browser does not say). */
  get maxMessageSize() {
    const limit = this._wt.datagrams.maxDatagramSize;
    return typeof limit === "number" ? Math.max(0, limit - 1) : null;
  }

  /**
   * Send one message in one datagram (it may be lost).
   * @param {{codec?: "json" | "bytes"}} options
   * @throws {MessageTooLargeError} the datagram would exceed the session's datagram size limit.
   */
  async send(value, { codec = "json" } = {}) {
    const chosen = codecNamed(codec);
    const payload = chosen.encode(value);
    const limit = this.maxMessageSize;
    if (limit !== null && payload.length > limit) {
      throw new MessageTooLargeError(`a datagram message of ${payload.length} bytes does not fit (limit ${limit})`, {
        code: CODES.MESSAGE_TOO_LARGE,
      });
    }
    this._writer ??= this._wt.datagrams.writable.getWriter();
    await this._writer.write(concat(Uint8Array.of(chosen.id), payload));
    this.stats.sent += 1;
  }

  /**
   * The next valid datagram message (a Uint8Array for the bytes codec).
   * @throws {MessagingTimeoutError} none within timeoutMs.
   * @throws {ChannelClosedError} the session's datagrams ended.
   */
  receive({ timeoutMs } = {}) {
    return this._puller.next(timeoutMs, "datagram receive");
  }

  /** Datagram messages until the session ends. */
  async *[Symbol.asyncIterator]() {
    for (;;) {
      let message;
      try {
        message = await this.receive();
      } catch (error) {
        if (error instanceof ChannelClosedError) return;
        throw error;
      }
      yield message;
    }
  }

  _close() {
    this._puller.end(new ChannelClosedError("the messenger is closed", { code: CODES.CLOSED }));
    this._reader?.cancel().catch(ignore);
    this._writer?.close().catch(ignore);
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
    try {
      if (codec) {
        const value = codec.decode(data.subarray(1));
        this.stats.received += 1;
        return { value };
      }
    } catch {
      // counted below
    }
    this.stats.droppedInvalid += 1;
    return null;
  }
}

// ------------------------------------------------------------------------------------ messenger

/** The hello of an opener, checked; throws on anything malformed. */
function parseHello(payload) {
  const hello = decodeJson(payload);
  if (!isObject(hello)) throw new TypeError("the hello is not a JSON object");
  const { channel, codec } = hello;
  const nameLength = typeof channel === "string" ? [...channel].length : 0;
  if (nameLength === 0 || nameLength > MAX_CHANNEL_NAME) throw new TypeError("bad channel name");
  if (typeof codec !== "string") throw new TypeError("bad codec");
  return { channel, codec, maxMessageSize: parseLimit(hello.max_message_size) };
}

/** The accept frame of an acceptor for a channel opened with `codec`. */
function parseAccept(payload, codec) {
  const accept = decodeJson(payload);
  if (!isObject(accept) || accept.codec !== codec) throw new TypeError("bad accept frame");
  return { maxMessageSize: parseLimit(accept.max_message_size) };
}

function parseLimit(value) {
  if (value === undefined || value === null) return DEFAULT_MAX_MESSAGE_SIZE;
  if (!Number.isSafeInteger(value) || value < 0) throw new TypeError("bad max_message_size");
  return value;
}

function checkChannelName(name) {
  const length = typeof name === "string" ? [...name].length : 0;
  if (length === 0 || length > MAX_CHANNEL_NAME) {
    throw new TypeError(`a channel name is a string of 1 to ${MAX_CHANNEL_NAME} characters`);
  }
}

/** Reset the stream's writable and stop its readable, both with `code`. */
function refuse(stream, bytes, code) {
  stream.writable.abort(streamError(code)).catch(ignore);
  bytes.cancel(streamError(code));
}

/**
 * The message layer of one WebTransport session: channels by name, plain streams beside them,
 * datagram messages and RPC. It takes over the session's incoming bidirectional streams.
 *
 * Peer-opened channels are routed by name: a name registered with route() is accepted and its
 * handler runs; otherwise a name that acceptChannel() may take (any name while no route is
 * registered and `channels` is null, else only the names listed in `channels`) waits, at most
 * `maxPendingChannels` of them, until accepted; anything else is refused (CHANNEL_UNKNOWN, a full
 * queue CHANNEL_REFUSED, a codec other than json/bytes CODEC_UNSUPPORTED, a bad hello BAD_HELLO).
 */
export class Messenger {
  /**
   * @param {WebTransport} wt a session (ready or not).
   * @param {object} options
   * @param {number} [options.maxMessageSize] the largest message this side accepts (bytes).
   * @param {string[]|null} [options.channels] names acceptChannel() may take once routes exist.
   * @param {number} [options.helloTimeoutMs] how long a peer stream may take to show its hello.
   * @param {number} [options.maxPendingChannels] peer channels (and plain streams) waiting to be
   *   taken, at most; more are refused with CHANNEL_REFUSED.
   */
  constructor(wt, { maxMessageSize = DEFAULT_MAX_MESSAGE_SIZE, channels = null, helloTimeoutMs = 10000, maxPendingChannels = 16 } = {}) {
    this._wt = wt;
    this._maxMessageSize = maxMessageSize;
    this._allowed = channels === null ? null : new Set(channels);
    this._helloTimeoutMs = helloTimeoutMs;
    this._maxPending = maxPendingChannels;
    this._routes = new Map();
    this._pending = []; // peer channels not accepted yet: {stream, bytes, hello}
    this._acceptors = []; // acceptChannel() calls waiting: {name, resolve, reject, timer}
    this._plain = []; // plain streams not taken yet
    this._plainWaiters = [];
    this._open = new Set();
    this._ended = null; // the error for waiters once the session or messenger ended
    this._uniStarted = false;
    /** @type {DatagramMessages} messages over the session's datagrams. */
    this.datagrams = new DatagramMessages(wt);
    this._bidiReader = wt.incomingBidirectionalStreams.getReader();
    this._acceptStreams();
  }

  /**
   * Open a channel; resolves once the peer accepted it.
   * @param {string} name the channel's name (1 to 256 characters).
   * @param {{codec?: "json"|"bytes", timeoutMs?: number}} options
   * @returns {Promise<Channel>}
   * @throws {ChannelRefusedError} the peer refused it (`code`: CHANNEL_UNKNOWN, ...).
   * @throws {ChannelClosedError} the stream failed before the accept frame.
   * @throws {MessagingTimeoutError} not accepted within timeoutMs (the stream is aborted).
   */
  async openChannel(name, { codec = "json", timeoutMs } = {}) {
    checkChannelName(name);
    const chosen = codecNamed(codec);
    if (this._ended) throw this._ended;
    const stream = await this._wt.createBidirectionalStream();
    const writer = stream.writable.getWriter();
    const hello = encodeJson({ channel: name, codec: chosen.name, max_message_size: this._maxMessageSize });
    const wrote = writer.write(concat(PREAMBLE, frame(hello)));
    wrote.catch(ignore);
    const bytes = new ByteReader(stream.readable.getReader());
    const waited = this._readAccept(bytes, name, chosen.name);
    const accept = await (timeoutMs == null ? waited : deadline(waited, timeoutMs, null));
    if (accept === null) {
      writer.abort(streamError(CODES.CLOSED)).catch(ignore);
      bytes.cancel(streamError(CODES.CLOSED));
      throw new MessagingTimeoutError(`channel "${name}" was not accepted within ${timeoutMs} ms`);
    }
    if (accept.error) throw await this._openFailed(accept.error, { name, writer, bytes, wrote });
    const channel = new Channel({ name, codec: chosen, writer, bytes, maxMessageSize: this._maxMessageSize, peerMaxMessageSize: accept.maxMessageSize });
    return this._track(channel);
  }

  /**
   * The next channel the peer opened (with that name, if given), accepted now.
   * @param {string|null} name
   * @param {{timeoutMs?: number}} options
   * @returns {Promise<Channel>}
   * @throws {MessagingTimeoutError} none within timeoutMs.
   * @throws {ChannelClosedError} the session ended or the messenger was closed.
   */
  acceptChannel(name = null, { timeoutMs } = {}) {
    const index = this._pending.findIndex((pending) => name === null || pending.hello.channel === name);
    if (index >= 0) return Promise.resolve(this._adopt(this._pending.splice(index, 1)[0]));
    if (this._ended) return Promise.reject(this._ended);
    return new Promise((resolve, reject) => {
      const acceptor = { name, resolve, reject, timer: null };
      if (timeoutMs != null) {
        acceptor.timer = setTimeout(() => {
          this._acceptors = this._acceptors.filter((other) => other !== acceptor);
          reject(new MessagingTimeoutError(`no channel ${JSON.stringify(name ?? "")} opened within ${timeoutMs} ms`));
        }, timeoutMs);
      }
      this._acceptors.push(acceptor);
    });
  }

  /**
   * Call `handler(channel)` for every channel of that name the peer opens. When the promise the
   * handler returns settles, the channel is closed (aborted with code 0 if it rejected), so a
   * handler that keeps a channel awaits the end of its conversation.
   * Once a route exists, names neither routed nor listed in `channels` are refused.
   */
  route(name, handler) {
    checkChannelName(name);
    this._routes.set(name, handler);
    return this;
  }

  /**
   * The peer's streams that are not channels, bytes intact: bidirectional ones without the
   * preamble as {readable, writable, bidirectional: true}, unidirectional ones as
   * {readable, writable: null, bidirectional: false}. Ends when the session or messenger ends.
   */
  async *incomingStreams() {
    this._startUni();
    for (;;) {
      if (this._plain.length > 0) {
        yield this._plain.shift();
        continue;
      }
      if (this._ended) return;
      await new Promise((resolve) => this._plainWaiters.push(resolve));
    }
  }

  /**
   * Open (or, with open=false, accept) an RPC channel and wrap it in an RpcPeer.
   * @param {{name?: string, open?: boolean, codec?: "json", timeoutMs?: number}} options plus the
   *   RpcPeer options (methods, maxPendingCalls, maxConcurrentHandlers, exposeErrors).
   * @returns {Promise<RpcPeer>}
   */
  async rpc({ name = "rpc", open = true, codec = "json", timeoutMs, ...options } = {}) {
    if (codec !== "json") throw new TypeError("RPC in the browser uses the json codec");
    const channel = open ? await this.openChannel(name, { codec, timeoutMs }) : await this.acceptChannel(name, { timeoutMs });
    return new RpcPeer(channel, options);
  }

  /** Close every channel of this messenger, refuse waiting ones and stop reading (not the session). */
  close() {
    this._end(new ChannelClosedError("the messenger is closed", { code: CODES.CLOSED }));
    for (const channel of [...this._open]) channel.close();
    this.datagrams._close();
    try {
      this._bidiReader.releaseLock();
    } catch {
      this._bidiReader.cancel().catch(ignore);
    }
    this._uniReader?.cancel().catch(ignore);
  }

  // ---------------------------------------------------------------------------- internals

  async _readAccept(bytes, name, codec) {
    try {
      const payload = await bytes.readFrame(MAX_HELLO_SIZE);
      if (payload === null) throw new FramingError(null, `channel "${name}" ended before it was accepted`);
      return parseAccept(payload, codec);
    } catch (error) {
      return { error };
    }
  }

  async _openFailed(error, { name, writer, bytes, wrote }) {
    let code = error instanceof FramingError ? error.code : streamErrorCode(error);
    if (error instanceof TypeError || error instanceof SyntaxError) code = CODES.BAD_HELLO;
    if (code === null) code = streamErrorCode(await wrote.then(() => null, (writeError) => writeError));
    if (code !== null && code !== CODES.CLOSED && !(error instanceof FramingError && error.code === null)) {
      writer.abort(streamError(code)).catch(ignore);
      bytes.cancel(streamError(code));
    }
    if (REFUSALS.has(code) && !(error instanceof TypeError || error instanceof SyntaxError)) {
      const reason = Object.keys(CODES).find((key) => CODES[key] === code);
      return new ChannelRefusedError(`the peer refused channel "${name}": ${reason}`, { code, cause: error });
    }
    return new ChannelClosedError(`channel "${name}" could not be opened: ${error.message}`, { code, cause: error });
  }

  _track(channel) {
    this._open.add(channel);
    channel._onEnd.push((ended) => this._open.delete(ended));
    if (this._ended) channel.close();
    return channel;
  }

  /** Accept a waiting peer channel: write the accept frame and hand the channel out. */
  _adopt({ stream, bytes, hello }) {
    const writer = stream.writable.getWriter();
    const accept = encodeJson({ codec: hello.codec, max_message_size: this._maxMessageSize });
    writer.write(frame(accept)).catch(ignore);
    const codec = codecNamed(hello.codec);
    const channel = new Channel({ name: hello.channel, codec, writer, bytes, maxMessageSize: this._maxMessageSize, peerMaxMessageSize: hello.maxMessageSize });
    return this._track(channel);
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
    if (this._uniStarted || this._ended) return;
    this._uniStarted = true;
    this._uniReader = this._wt.incomingUnidirectionalStreams.getReader();
    this._acceptUni().catch(ignore);
  }

  /** Take the peer's unidirectional streams while there is room for them (flow control waits). */
  async _acceptUni() {
    while (!this._ended) {
      if (this._plain.length >= this._maxPending) {
        await new Promise((resolve) => setTimeout(resolve, 50));
        continue;
      }
      const { value: readable, done } = await this._uniReader.read();
      if (done) return;
      this._queuePlain({ readable, writable: null, bidirectional: false });
    }
  }

  _queuePlain(stream) {
    if (this._plain.length >= this._maxPending) return false;
    this._plain.push(stream);
    for (const wake of this._plainWaiters.splice(0)) wake();
    return true;
  }

  /** A peer bidirectional stream: a channel (route, queue or refuse) or a plain stream. */
  async _classify(stream) {
    const bytes = new ByteReader(stream.readable.getReader());
    const shown = await deadline(bytes.fill(PREAMBLE.length), this._helloTimeoutMs, false).catch(() => false);
    if (!shown || !PREAMBLE.every((byte, index) => bytes.copy(PREAMBLE.length, false)[index] === byte)) {
      const plain = { readable: bytes.toReadable(), writable: stream.writable, bidirectional: true };
      if (!this._queuePlain(plain)) refuse(stream, bytes, CODES.CHANNEL_REFUSED);
      return;
    }
    bytes.copy(PREAMBLE.length);
    const hello = await deadline(this._readHello(bytes), this._helloTimeoutMs, null);
    if (hello === null) {
      refuse(stream, bytes, CODES.BAD_HELLO);
      return;
    }
    this._route({ stream, bytes, hello });
  }

  async _readHello(bytes) {
    try {
      const payload = await bytes.readFrame(MAX_HELLO_SIZE);
      return payload === null ? null : parseHello(payload);
    } catch {
      return null;
    }
  }

  _route(pending) {
    const { channel, codec } = pending.hello;
    const refusal = this._refusal(channel, codec);
    if (refusal !== null) {
      refuse(pending.stream, pending.bytes, refusal);
    } else if (this._routes.has(channel)) {
      this._runRoute(this._routes.get(channel), this._adopt(pending));
    } else {
      this._offer(pending);
    }
  }

  _refusal(name, codec) {
    if (!Object.hasOwn(CODECS, codec)) return CODES.CODEC_UNSUPPORTED;
    if (this._ended) return CODES.CHANNEL_REFUSED;
    if (this._routes.has(name)) return null;
    const listed = this._allowed === null ? this._routes.size === 0 : this._allowed.has(name);
    return listed ? null : CODES.CHANNEL_UNKNOWN;
  }

  /** Give a peer channel to a waiting acceptChannel() call, or queue it. */
  _offer(pending) {
    const acceptor = this._acceptors.find((waiting) => waiting.name === null || waiting.name === pending.hello.channel);
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

  /** The session or messenger ended: fail the waiters, refuse what waits, wake the iterators. */
  _end(error) {
    if (this._ended) return;
    this._ended = error;
    for (const acceptor of this._acceptors.splice(0)) {
      clearTimeout(acceptor.timer);
      acceptor.reject(error);
    }
    for (const pending of this._pending.splice(0)) refuse(pending.stream, pending.bytes, CODES.CHANNEL_REFUSED);
    for (const wake of this._plainWaiters.splice(0)) wake();
  }
}

// ------------------------------------------------------------------------------------ rpc

function response(id, result) {
  return { jsonrpc: JSONRPC, id, result: result === undefined ? null : result };
}

function errorResponse(id, code, message, data) {
  const error = data === undefined ? { code, message } : { code, message, data };
  return { jsonrpc: JSONRPC, id, error };
}

function validId(id) {
  return typeof id === "string" || Number.isSafeInteger(id);
}

/** Why a message with "method" is not a valid request (a message), or null. */
function requestProblem(message) {
  if (message.jsonrpc !== JSONRPC) return 'jsonrpc must be "2.0"';
  if (typeof message.method !== "string") return "method must be a string";
  if ("id" in message && !validId(message.id)) return "id must be an integer or a string";
  if ("params" in message && typeof message.params !== "object") return "params must be an array or an object";
  if ("params" in message && message.params === null) return "params must be an array or an object";
  return null;
}

function toRpcError(error) {
  if (isObject(error) && Number.isSafeInteger(error.code) && typeof error.message === "string") {
    return new RpcError(error.code, error.message, error.data);
  }
  return new RpcError(RPC_ERRORS.INTERNAL_ERROR, "the peer sent a malformed error object", error);
}

/**
 * JSON-RPC 2.0 over a channel, both ways: the peer's requests run this side's methods, and
 * call() / notify() send requests to the peer. `rpc.cancel` is sent when a call times out or is
 * aborted, and honoured for the peer's calls (their handler's signal aborts, no answer is sent).
 *
 * Reading never stops for a slow method: at most maxConcurrentHandlers methods run at once, and
 * further requests are answered TOO_MANY_CALLS (-32000) at once.
 *
 * `stats` = {callsSent, callsReceived, errorsSent, unknownResponses, rejectedBusy, cancelledByPeer}.
 * `closed` is a promise that resolves (with the ending ChannelClosedError) when the channel ends.
 */
export class RpcPeer {
  /**
   * @param {Channel} channel a json channel.
   * @param {object} options
   * @param {Object<string, Function>|Map<string, Function>} [options.methods] methods to expose
   *   from the first request on (method() can add more later).
   * @param {number} [options.maxPendingCalls] calls of this side waiting for an answer, at most.
   * @param {number} [options.maxConcurrentHandlers] the peer's calls running here at once, at most.
   * @param {boolean} [options.exposeErrors] send an exception's message in INTERNAL_ERROR answers.
   */
  constructor(channel, { methods = {}, maxPendingCalls = 64, maxConcurrentHandlers = 64, exposeErrors = false } = {}) {
    this.channel = channel;
    this.stats = { callsSent: 0, callsReceived: 0, errorsSent: 0, unknownResponses: 0, rejectedBusy: 0, cancelledByPeer: 0 };
    this._methods = new Map();
    for (const [name, handler] of methods instanceof Map ? methods : Object.entries(methods)) this.method(name, handler);
    this._maxPending = maxPendingCalls;
    this._maxHandlers = maxConcurrentHandlers;
    this._exposeErrors = exposeErrors;
    this._calls = new Map(); // our id -> {resolve, reject, cleanup}
    this._running = new Map(); // the peer's id (or a symbol for a notification) -> AbortController
    this._gaveUp = new Set(); // our ids given up on, whose late answers are dropped quietly
    this._writes = new Set();
    this._nextId = 1;
    this._end = null;
    this.closed = this._readLoop();
  }

  /**
   * Expose a method: `handler(params, {signal, id, peer})` returns the result or a promise of it.
   * Throw an RpcError to answer with that error; any other exception answers INTERNAL_ERROR.
   * `signal` aborts when the caller sent rpc.cancel (or the channel ended); no answer is sent then.
   */
  method(name, handler) {
    if (typeof name !== "string" || name.startsWith("rpc.")) throw new TypeError(`cannot expose a method named ${name}`);
    if (typeof handler !== "function") throw new TypeError("a method handler is a function");
    this._methods.set(name, handler);
    return this;
  }

  /**
   * Call a method of the peer; resolves with its result.
   * @param {{timeoutMs?: number, signal?: AbortSignal}} options
   * @throws {RpcError} the peer answered with an error (`code`, `message`, `data`).
   * @throws {RpcTimeoutError} no answer within timeoutMs (rpc.cancel was sent).
   * @throws the signal's reason when it aborts (rpc.cancel was sent).
   * @throws {ChannelClosedError} the channel ended before the answer.
   */
  call(method, params, { timeoutMs, signal } = {}) {
    if (this._end) return Promise.reject(this._end);
    if (signal?.aborted) return Promise.reject(signal.reason);
    if (this._calls.size >= this._maxPending) {
      return Promise.reject(new RpcError(RPC_ERRORS.TOO_MANY_CALLS, `${this._calls.size} calls are already waiting for an answer`));
    }
    const id = this._nextId++;
    const request = this._message(method, params, { id });
    return new Promise((resolve, reject) => {
      const giveUp = (error) => this._giveUp(id, error);
      const onAbort = () => giveUp(signal.reason);
      const timer = timeoutMs == null ? null : setTimeout(() => giveUp(new RpcTimeoutError(`${method}: no answer within ${timeoutMs} ms`)), timeoutMs);
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
  notify(method, params) {
    if (this._end) return Promise.reject(this._end);
    return this.channel.send(this._message(method, params));
  }

  /** Close the channel; calls still waiting reject with ChannelClosedError. */
  async close() {
    this._shutdown(new ChannelClosedError(`RPC channel "${this.channel.name}" was closed`, { code: CODES.CLOSED }));
    await this.channel.close();
    await this.closed;
  }

  // ---------------------------------------------------------------------------- calls

  _message(method, params, extra = {}) {
    if (typeof method !== "string") throw new TypeError("a method name is a string");
    if (params !== undefined && (typeof params !== "object" || params === null)) {
      throw new TypeError("params are an array or an object");
    }
    return params === undefined ? { jsonrpc: JSONRPC, ...extra, method } : { jsonrpc: JSONRPC, ...extra, method, params };
  }

  _giveUp(id, error) {
    if (!this._settle(id, { error })) return;
    this._gaveUp.add(id);
    if (this._gaveUp.size > 4 * this._maxPending) this._gaveUp.delete(this._gaveUp.values().next().value);
    this.notify("rpc.cancel", { id }).catch(ignore);
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
    const settled = "error" in message ? { error: toRpcError(message.error) } : { value: message.result };
    if (this._settle(message.id, settled)) return;
    if (!this._gaveUp.delete(message.id)) this.stats.unknownResponses += 1;
  }

  // ---------------------------------------------------------------------------- reading

  async _readLoop() {
    // Start after the current task: methods registered right after creation see every request.
    await new Promise((resolve) => setTimeout(resolve, 0));
    for (;;) {
      let message;
      try {
        message = await this.channel.receive();
      } catch (error) {
        if (error instanceof DecodeError) {
          this._write(errorResponse(null, RPC_ERRORS.PARSE_ERROR, "Parse error"));
          await this._throttle();
          continue;
        }
        this._shutdown(error);
        this.channel.close();
        return error;
      }
      this._dispatch(message);
      await this._throttle();
    }
  }

  /** Wait while many answers are being written (a peer that does not read slows us down). */
  async _throttle() {
    while (this._writes.size >= Math.max(16, this._maxHandlers)) await Promise.race(this._writes);
  }

  _dispatch(message) {
    if (Array.isArray(message)) {
      this._dispatchBatch(message);
      return;
    }
    const answer = this._handle(message);
    if (answer) answer.then((reply) => reply && this._write(reply));
  }

  async _dispatchBatch(messages) {
    if (messages.length === 0) {
      this._write(errorResponse(null, RPC_ERRORS.INVALID_REQUEST, "Invalid Request: empty batch"));
      return;
    }
    const answers = await Promise.all(messages.map((message) => this._handle(message)));
    const replies = answers.filter(Boolean);
    if (replies.length > 0) this._write(replies);
  }

  /** One message: a response settles a call; a request runs. Returns the reply's promise or null. */
  _handle(message) {
    if (isObject(message) && !("method" in message) && ("result" in message || "error" in message)) {
      this._onResponse(message);
      return null;
    }
    if (!isObject(message) || !("method" in message)) {
      const id = isObject(message) && validId(message.id) ? message.id : null;
      return Promise.resolve(this._error(id, RPC_ERRORS.INVALID_REQUEST, "Invalid Request"));
    }
    const problem = requestProblem(message);
    if (problem) {
      const id = validId(message.id) ? message.id : null;
      return Promise.resolve(this._error(id, RPC_ERRORS.INVALID_REQUEST, `Invalid Request: ${problem}`));
    }
    return this._request(message);
  }

  _request(message) {
    const notification = !("id" in message);
    const { id, method } = message;
    if (method === "rpc.cancel") {
      this._onCancel(message.params);
      return notification ? null : Promise.resolve(response(id, null));
    }
    const handler = method.startsWith("rpc.") ? undefined : this._methods.get(method);
    if (!handler) return notification ? null : Promise.resolve(this._error(id, RPC_ERRORS.METHOD_NOT_FOUND, "Method not found"));
    if (this._running.size >= this._maxHandlers) {
      this.stats.rejectedBusy += 1;
      return notification ? null : Promise.resolve(this._error(id, RPC_ERRORS.TOO_MANY_CALLS, "Too many calls"));
    }
    if (!notification && this._running.has(id)) {
      return Promise.resolve(this._error(id, RPC_ERRORS.INVALID_REQUEST, "Invalid Request: this id is already running"));
    }
    return this._run(handler, message, notification);
  }

  async _run(handler, { id, params }, notification) {
    const controller = new AbortController();
    const key = notification ? Symbol("notification") : id;
    this._running.set(key, controller);
    this.stats.callsReceived += 1;
    try {
      const result = await handler(params, { signal: controller.signal, id, peer: this });
      return notification || controller.signal.aborted ? null : response(id, result);
    } catch (error) {
      return notification || controller.signal.aborted ? null : this._errorFor(id, error);
    } finally {
      this._running.delete(key);
    }
  }

  _onCancel(params) {
    const controller = isObject(params) ? this._running.get(params.id) : undefined;
    if (!controller || controller.signal.aborted) return;
    this.stats.cancelledByPeer += 1;
    controller.abort(new RpcError(RPC_ERRORS.INTERNAL_ERROR, "the caller cancelled this call"));
  }

  _errorFor(id, error) {
    if (error instanceof RpcError) return this._error(id, error.code, error.message, error.data);
    console.error("messaging: an RPC method failed", error);
    const message = this._exposeErrors ? String(error?.message ?? error) : "Internal error";
    return this._error(id, RPC_ERRORS.INTERNAL_ERROR, message);
  }

  _error(id, code, message, data) {
    return errorResponse(id, code, message, data);
  }

  /** Write a reply without waiting; a reply too large for the peer becomes INTERNAL_ERROR. */
  _write(reply) {
    const errors = (Array.isArray(reply) ? reply : [reply]).filter((item) => "error" in item).length;
    const sending = this.channel.send(reply).then(
      () => {
        this.stats.errorsSent += errors;
      },
      (error) => {
        if (error instanceof MessageTooLargeError) this._write(shrink(reply));
      },
    );
    this._writes.add(sending);
    sending.finally(() => this._writes.delete(sending));
  }

  _shutdown(error) {
    if (this._end) return;
    this._end = error instanceof ChannelClosedError ? error : new ChannelClosedError(`RPC channel "${this.channel.name}" ended: ${error}`, { cause: error });
    for (const id of [...this._calls.keys()]) this._settle(id, { error: this._end });
    for (const controller of this._running.values()) controller.abort(this._end);
  }
}

/** A reply whose results are replaced by INTERNAL_ERROR (they were too large to send). */
function shrink(reply) {
  const one = (item) => ("result" in item ? errorResponse(item.id, RPC_ERRORS.INTERNAL_ERROR, "Internal error: the result is too large") : item);
  return Array.isArray(reply) ? reply.map(one) : one(reply);
}
