// What the user is told beside the conversation: the connection banner (connecting,
// lost, retrying in N s, with "Retry now") and short notices that go away by
// themselves. No imports (see app.js).

const FIRST_CONNECT_QUIET_MS = 1000;
const NOTICE_MS = 6000;

const $ = (id) => document.getElementById(id);

export class Notices {
  constructor() {
    this.everOpen = false;
    this.bannerTimer = null;
    this.countdown = null;
    this.toastTimer = null;
    this.el = {
      root: $('chat'), banner: $('banner'), text: $('banner-text'), retry: $('banner-retry'),
      toast: $('toast'),
    };
  }

  /** Listen to "Retry now" until `signal` aborts. */
  bind({ handlers, signal }) {
    this.el.retry.addEventListener('click', () => handlers.reconnectNow(), { signal });
  }

  destroy() {
    clearTimeout(this.bannerTimer);
    clearTimeout(this.toastTimer);
    clearInterval(this.countdown);
    this.el.banner.hidden = true;
    this.el.toast.hidden = true;
  }

  /** Show the connection's state (see connection.js) in the banner. */
  setConnection(s) {
    const e = this.el;
    clearTimeout(this.bannerTimer);
    clearInterval(this.countdown);
    e.root.dataset.conn = s.state;
    if (s.state === 'open') {
      this.everOpen = true;
      e.banner.hidden = true;
      e.banner.dataset.state = 'open';
      return;
    }
    if (s.state === 'stopped') {
      e.banner.hidden = true;
      return;
    }
    e.banner.dataset.state = s.state;
    if (s.state === 'connecting') {
      e.text.textContent = this.everOpen ? 'Connection lost. Reconnecting…' : 'Connecting…';
      e.retry.hidden = true;
      // The first connect usually takes a few ms: do not flash a banner for it.
      if (this.everOpen) e.banner.hidden = false;
      else this.bannerTimer = setTimeout(() => { e.banner.hidden = false; }, FIRST_CONNECT_QUIET_MS);
      return;
    }
    const tick = () => {
      const secs = Math.max(0, Math.ceil((s.retryAt - Date.now()) / 1000));
      e.text.textContent = this.everOpen
        ? `Connection lost. Reconnecting in ${secs} s…`
        : `Cannot reach the server. Retrying in ${secs} s…`;
    };
    tick();
    this.countdown = setInterval(tick, 1000);
    e.retry.hidden = false;
    e.banner.hidden = false;
  }

  /** A short message that goes away by itself. */
  notice(text) {
    const t = this.el.toast;
    t.textContent = text;
    t.hidden = false;
    clearTimeout(this.toastTimer);
    this.toastTimer = setTimeout(() => { t.hidden = true; }, NOTICE_MS);
  }
}
