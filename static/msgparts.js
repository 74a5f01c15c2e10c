// What a message shows besides its author and time (§19 of docs/protocol.md): its text
// in the Markdown subset, the quote of the message it answers, "(edited)", the tombstone
// of a deleted one, the files it carries (attachments.js), its reactions as chips, how
// many replies it has, the button of its menu, and the status line of a message not
// confirmed yet. Plain DOM built on render.js's h(),
// which app.js passes in (no imports: see app.js). User text only reaches the page
// through text nodes.

const timeFmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });

/** The first line of a message, short enough for a quote. */
export function firstLine(body, max = 120) {
  const line = String(body ?? '').split('\n').find((l) => l.trim()) ?? '';
  return line.length > max ? `${line.slice(0, max - 1)}…` : line;
}

/** What a message says in one line: its first line of text or, for files alone, their
 *  names ("📎 plan.pdf, notes.txt"). */
export function gist(m, max = 120) {
  const line = firstLine(m?.body, max);
  const names = Array.isArray(m?.attachments) ? m.attachments.map((f) => String(f?.name ?? '')) : [];
  if (line || !names.length) return line;
  return firstLine(`📎 ${names.join(', ')}`, max);
}

export class MessageParts {
  /**
   * @param {object} render  render.js (h)
   * @param {object} markdown  markdown.js (renderMarkdown, EMOJI) with render's linkRanges
   *        and safeHref
   * @param {object} files  an AttachmentView (attachments.js)
   */
  constructor({ h, messageItem, linkRanges, safeHref }, { renderMarkdown, EMOJI }, files) {
    Object.assign(this, { h, messageItem, linkRanges, safeHref, renderMarkdown, EMOJI, files });
  }

  /** The item of a message the server has not confirmed yet (`item`: an outbox entry),
   *  with its files and an empty status line (see pendingStatus). */
  pendingItem(key, item, me) {
    const li = this.messageItem({ key, seq: null, user: me, ts: item.ts, body: item.body, me });
    li.dataset.clientId = item.clientId;
    const files = this.attachments(item.attachments);
    if (files) li.querySelector('.body').after(files);
    li.querySelector('.msg-main').append(this.h('p', { class: 'msg-status', 'data-testid': 'message-status' }));
    return li;
  }

  /** A pending item's state and status line: sending, waiting for the connection or
   *  for the server (`item.note`: why it is held), or failed with Retry and Discard
   *  (`on.retry`, `on.discard`). */
  pendingStatus(li, item, online, on) {
    const h = this.h;
    li.dataset.state = item.status === 'failed' ? 'failed' : 'pending';
    const status = li.querySelector('.msg-status');
    if (item.status === 'failed') {
      status.replaceChildren(
        h('span', { class: 'status-text' }, `Not sent. ${item.error || ''}`.trim()), ' ',
        h('button', { class: 'btn-link', type: 'button', 'data-testid': 'retry' }, 'Retry'), ' ',
        h('button', { class: 'btn-link', type: 'button', 'data-testid': 'discard' }, 'Discard'));
      const [retry, discard] = status.querySelectorAll('button');
      retry.addEventListener('click', on.retry);
      discard.addEventListener('click', on.discard);
    } else {
      let text = item.status === 'sending' || online ? 'Sending…' : 'Waiting for the connection…';
      if (online && item.status !== 'sending' && item.note) text = `${item.note} Retrying…`;
      status.replaceChildren(h('span', { class: 'status-text' }, text));
    }
  }

  /** The files a message carries, after its text (null: none). */
  attachments(list) {
    return this.files.render(list);
  }

  /** The message text as DOM nodes. */
  body(text, me) {
    return this.renderMarkdown(text, {
      document, links: this.linkRanges, safeHref: this.safeHref, me: me?.name ?? '',
    });
  }

  /** A reaction's emoji as shown: a known :shortcode: becomes its emoji. */
  emojiText(emoji) {
    const m = /^:([a-z0-9_+-]+):$/.exec(emoji);
    return m && Object.hasOwn(this.EMOJI, m[1]) ? this.EMOJI[m[1]] : emoji;
  }

  /**
   * Dress a confirmed message item (render.js's messageItem) with what its state says.
   * @param {HTMLElement} li
   * @param {object} m  the message in its current state
   * @param {object} ctx  {me, name(id) -> string|null, quote(seq) -> message|undefined,
   *        canAct: boolean, mentioned: whether it mentions the reader}
   */
  dress(li, m, ctx) {
    const h = this.h;
    const main = li.querySelector('.msg-main');
    const body = li.querySelector('.body');
    li.classList.toggle('deleted', Boolean(m.deleted));
    li.classList.toggle('mentions-me', Boolean(ctx.mentioned) && !m.deleted);
    if (m.deleted) {
      body.replaceChildren(h('span', { class: 'tombstone', 'data-testid': 'tombstone' },
        'This message was deleted'));
    } else {
      body.replaceChildren(this.body(m.body, ctx.me));
      const files = this.attachments(m.attachments);
      if (files) body.after(files);
    }
    if (Number.isInteger(m.reply_to)) {
      li.dataset.replyTo = String(m.reply_to);
      main.insertBefore(this.quote(m.reply_to, ctx.quote(m.reply_to)), main.querySelector('.body'));
    }
    const foot = [];
    if (m.edited_at && !m.deleted) {
      const when = timeFmt.format(new Date(m.edited_at));
      foot.push(h('span', { class: 'edited', 'data-testid': 'edited', title: `Edited ${when}` }, '(edited)'));
    }
    if (m.replies > 0) {
      foot.push(h('span', { class: 'replies', 'data-testid': 'replies' },
        m.replies === 1 ? '1 reply' : `${m.replies} replies`));
    }
    if (foot.length) main.append(h('p', { class: 'msg-foot' }, ...foot));
    if (!m.deleted && Array.isArray(m.reactions) && m.reactions.length) {
      main.append(this.reactions(m.reactions, ctx));
    }
    if (!m.deleted && ctx.canAct) {
      li.append(h('button', {
        class: 'msg-actions', type: 'button', 'data-testid': 'message-actions',
        'aria-haspopup': 'menu', 'aria-expanded': 'false', title: 'Message actions',
      }, h('span', { 'aria-hidden': 'true' }, '⋯'),
      h('span', { class: 'visually-hidden' }, `Actions for the message of ${m.user.name}`)));
    }
    return li;
  }

  /** The quote of the message a reply answers (`orig` undefined: not loaded yet). */
  quote(seq, orig) {
    const h = this.h;
    let author = '';
    let text = 'a message';
    if (orig?.deleted) text = 'a deleted message';
    else if (orig) {
      author = orig.user?.name ?? '';
      text = gist(orig);
    }
    return h('button', {
      class: 'reply-quote', type: 'button', 'data-testid': 'reply-quote', 'data-target': String(seq),
      title: 'Show the message this answers',
    },
    h('span', { class: 'visually-hidden' }, 'In reply to '),
    author ? h('span', { class: 'quote-author', 'data-testid': 'quote-author' }, author) : null,
    h('span', { class: 'quote-text', 'data-testid': 'quote-text' }, text));
  }

  /** Reaction chips: emoji and count, pressed when the reader is among them; click
   *  toggles the reader's own. */
  reactions(list, { me, name }) {
    const h = this.h;
    return h('div', { class: 'reactions', 'data-testid': 'reactions' }, ...list.map((r) => {
      const users = Array.isArray(r.users) ? r.users : [];
      const mine = users.includes(me.id);
      const who = users.map((id) => (id === me.id ? 'you' : name(id) ?? 'someone')).join(', ');
      const shown = this.emojiText(r.emoji);
      const count = Number.isInteger(r.count) ? r.count : users.length;
      return h('button', {
        class: `reaction${mine ? ' mine' : ''}`, type: 'button', 'data-testid': 'reaction',
        'data-emoji': r.emoji, 'aria-pressed': mine ? 'true' : 'false',
        title: `${who} reacted with ${r.emoji}`,
        'aria-label': `${shown} ${count}: ${who}${mine ? '. Click to take yours back' : ''}`,
      }, h('span', { class: 'reaction-emoji', 'aria-hidden': 'true' }, shown), ' ',
      h('span', { class: 'reaction-count', 'data-testid': 'reaction-count', 'aria-hidden': 'true' }, String(count)));
    }));
  }
}
