// One WebSocket to /ws that keeps itself open: reconnects with exponential backoff and
// jitter, notices dead connections with a ping watchdog, and reports its state.
// It knows nothing about rooms; chat.js does. No imports (see app.js).

const BASE_DELAY_MS = 1000;
const MAX_DELAY_MS = 30000;
const TRY_LATER_MIN_MS = 5000; // close code 1013: the server asked us to back off
const PING_EVERY_MS = 25000;
const DEAD_AFTER_MS = 60000; // no frame at all for this long: the socket is dead

export const CLOSE_GOING_AWAY = 1001;
export const CLOSE_POLICY = 1008;
export const CLOSE_TRY_LATER = 1013;

/**
 * States reported through onState({state, retryAt, attempt}):
 *   'connecting'  a socket is being opened
 *   'open'        the server said hello
 *   'waiting'     closed; the next attempt is scheduled at retryAt (ms epoch)
 *   'stopped'     stop() was called or the session is gone
 */
export class Connection {
  /**
   * @param {object} o
   * @param {string} o.url            ws:// or wss:// URL of /ws
   * @param {(frame: object) => void} o.onFrame   every parsed frame, hello included
   * @param {() => void} o.onClose    the open socket went away (any reason)
   * @param {(s: object) => void} o.onState
   * @param {() => Promise<'ok'|'unauthorized'|'unknown'>} o.checkAuth  asked when the
   *        upgrade fails or the server closes with 1008, to tell a revoked session apart
   * @param {(reason: string) => void} o.onAuthLost the session is gone: stop and go to the
   *        login screen (`reason`: the close reason that preceded it, if any)
   */
  constructor({ url, onFrame, onClose, onState, checkAuth, onAuthLost }) {
    Object.assign(this, { url, onFrame, onClose, onState, checkAuth, onAuthLost });
    this.ws = null;
    this.isOpen = false;
    this.stopped = true;
    this.attempt = 0;
    this.retryTimer = null;
    this.pingTimer = null;
    this.lastFrameAt = 0;
    this.policyReason = ''; // the reason of a 1008 close since the last hello
    this._onOnline = () => this.reconnectNow();
    this._onVisible = () => {
      if (document.visibilityState === 'visible') this.reconnectNow();
    };
  }

  start() {
    if (!this.stopped) return;
    this.stopped = false;
    window.addEventListener('online', this._onOnline);
    document.addEventListener('visibilitychange', this._onVisible);
    this._connect();
  }

  stop() {
    this.stopped = true;
    window.removeEventListener('online', this._onOnline);
    document.removeEventListener('visibilitychange', this._onVisible);
    clearTimeout(this.retryTimer);
    const ws = this.ws;
    this._detach();
    if (ws) ws.close(1000, 'bye');
    this._state('stopped');
  }

  /** Send one frame; false when there is no open connection (the caller queues). */
  send(frame) {
    if (!this.isOpen || !this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  /** Give up on the open socket as if it had died (a send went unanswered: the
   *  connection may be silently dead, which the watchdog would notice only after
   *  DEAD_AFTER_MS) and reconnect after the usual backoff. */
  restart() {
    if (this.stopped || !this.ws) return;
    this._abandon(this.ws, this.isOpen);
  }

  /** Skip the remaining backoff (the "Retry now" button, the browser coming online). */
  reconnectNow() {
    if (this.stopped || this.ws) return;
    clearTimeout(this.retryTimer);
    this._connect();
  }

  _state(state, extra = {}) {
    this.onState({ state, attempt: this.attempt, ...extra });
  }

  _connect() {
    this._state('connecting');
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch {
      this._retry(false, 1006);
      return;
    }
    this.ws = ws;
    let opened = false;
    ws.onopen = () => {
      opened = true;
      this.lastFrameAt = Date.now();
      this._startWatchdog(ws);
    };
    ws.onmessage = (ev) => {
      this.lastFrameAt = Date.now();
      let frame;
      try {
        frame = JSON.parse(ev.data);
      } catch {
        return; // not ours to fix; the server only sends JSON
      }
      if (!frame || typeof frame !== 'object') return;
      if (frame.type === 'hello') {
        this.isOpen = true;
        this.policyReason = '';
        this.attempt = 0;
        this._state('open');
      }
      this.onFrame(frame);
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return; // already detached (watchdog or stop)
      this._lost(opened, ev.code, ev.reason);
    };
    ws.onerror = () => {}; // a close event always follows
  }

  /** Forget the socket without waiting for a close handshake that may never come. */
  _detach() {
    const ws = this.ws;
    const wasOpen = this.isOpen;
    this.ws = null;
    this.isOpen = false;
    clearInterval(this.pingTimer);
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    }
    if (wasOpen) this.onClose();
    return ws;
  }

  _lost(opened, code, reason = '') {
    this._detach();
    if (this.stopped) return;
    this._retry(opened, code, reason);
  }

  async _retry(opened, code, reason = '') {
    // A refused upgrade (401 before the handshake) and close 1008 look like network
    // trouble from here; ask the API whether the session still exists.
    if (code === CLOSE_POLICY) this.policyReason = reason;
    if (code === CLOSE_POLICY || !opened) {
      const auth = await this.checkAuth().catch(() => 'unknown');
      if (this.stopped) return;
      if (auth === 'unauthorized') {
        this.stop();
        this.onAuthLost(this.policyReason);
        return;
      }
    }
    const cap = Math.min(MAX_DELAY_MS, BASE_DELAY_MS * 2 ** this.attempt);
    let delay = cap / 2 + Math.random() * (cap / 2); // "equal jitter": never 0, never in step
    if (code === CLOSE_TRY_LATER) delay = Math.max(delay, TRY_LATER_MIN_MS + Math.random() * 2000);
    this.attempt += 1;
    const retryAt = Date.now() + delay;
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this._connect(), delay);
    this._state('waiting', { retryAt, code });
  }

  /** Detach `ws` and schedule the next attempt; closing a dead socket may never finish,
   *  so nothing waits for its close event. */
  _abandon(ws, opened) {
    this._lost(opened, 1006);
    try {
      ws.close();
    } catch {
      // already closing
    }
  }

  _startWatchdog(ws) {
    clearInterval(this.pingTimer);
    this.pingTimer = setInterval(() => {
      if (this.ws !== ws) return;
      if (Date.now() - this.lastFrameAt > DEAD_AFTER_MS) {
        this._abandon(ws, true);
        return;
      }
      if (ws.readyState === WebSocket.OPEN) ws.send('{"type":"ping"}');
    }, PING_EVERY_MS);
  }
}
