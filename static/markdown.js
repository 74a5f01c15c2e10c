// The Markdown subset of messages (docs/formatting.md), rendered straight into DOM
// nodes: user text only ever becomes text nodes, and the only elements made are
// p-free blocks (pre, blockquote, ul, ol, li) and inline marks (strong, em, del, code,
// a, span). Nothing goes through innerHTML; a link is made only for an http, https or
// mailto URL. A pure function of its input; no imports (see app.js): the linkifier
// comes in as `links` (render.js's linkRanges, which keeps parentheses right).
//
// Every step is a forward scan with indexOf for a closing mark, so a 4000-character
// message costs at most a few million character steps, whatever it holds.

/** Shortcodes written as :name: and shown as the emoji (also the reaction picker's). */
export const EMOJI = {
  '+1': '👍', thumbsup: '👍', '-1': '👎', thumbsdown: '👎', heart: '❤️', tada: '🎉',
  smile: '😄', grin: '😁', joy: '😂', laughing: '😆', wink: '😉', blush: '😊',
  thinking: '🤔', eyes: '👀', fire: '🔥', rocket: '🚀', clap: '👏', pray: '🙏',
  ok_hand: '👌', wave: '👋', muscle: '💪', star: '⭐', sparkles: '✨', '100': '💯',
  white_check_mark: '✅', check: '✅', x: '❌', warning: '⚠️', bug: '🐛', coffee: '☕',
  cry: '😢', sob: '😭', sweat_smile: '😅', upside_down: '🙃', party: '🥳', heart_eyes: '😍',
  sunglasses: '😎', rofl: '🤣', shrug: '🤷', point_up: '☝️', raised_hands: '🙌', bulb: '💡',
};

const ROOM_WORDS = new Set(['room', 'channel', 'here', 'everyone']);
const MAX_DEPTH = 4; // nesting of marks and quotes
const NAME_RE = /@([A-Za-z0-9_.-]{1,32})/y;
const SHORTCODE_RE = /:([a-z0-9_+-]{1,30}):/y;
const LINK_RE = /\[([^\[\]\n]{1,300})\]\(([^()\s]{1,2048})\)/y;
const FENCE_RE = /^\s{0,3}```/;
const CLOSING_FENCE_RE = /^\s{0,3}```\s*$/; // nothing after it: "```<b>" is code, not a close
const LANGUAGE_RE = /^[\w+#.-]*$/; // what an opening fence may name (not shown)
const QUOTE_RE = /^\s{0,3}> ?/;
const BULLET_RE = /^\s{0,3}[-*+] +(?=\S)/;
const NUMBER_RE = /^\s{0,3}\d{1,9}[.)] +(?=\S)/;
const WORDISH = /[\p{L}\p{N}_]/u;

/**
 * Render a message body.
 * @param {string} text
 * @param {object} o
 * @param {Document} o.document
 * @param {(text: string) => {start:number, end:number, href:string}[]} o.links  URLs in text
 * @param {(href: string) => string|null} o.safeHref  a link target that may be used, or null
 * @param {string} [o.me]  the reader's name: their mentions are marked more strongly
 * @returns {DocumentFragment}
 */
export function renderMarkdown(text, { document: doc, links, safeHref, me = '' }) {
  const ctx = { doc, links, safeHref, me: me.toLowerCase() };
  const frag = doc.createDocumentFragment();
  blocks(ctx, String(text), frag, 0);
  return frag;
}

function el(ctx, tag, cls) {
  const e = ctx.doc.createElement(tag);
  if (cls) e.className = cls;
  return e;
}

/** Block structure: fenced code, quotes, lists; the rest is text with its newlines. */
function blocks(ctx, text, parent, depth) {
  const lines = text.split('\n');
  let run = []; // plain lines not yet emitted
  const flush = (beforeBlock) => {
    if (beforeBlock) while (run.length && !run[run.length - 1].trim()) run.pop();
    if (run.length) inline(ctx, run.join('\n'), parent, depth);
    run = [];
  };
  const afterBlock = () => {
    // The block breaks the line itself: one empty line after it is not shown twice.
    if (i < lines.length && !lines[i].trim() && !FENCE_RE.test(lines[i])) i += 1;
  };
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (FENCE_RE.test(line)) {
      let end = i + 1;
      while (end < lines.length && !CLOSING_FENCE_RE.test(lines[end])) end += 1;
      if (end === lines.length && run.length + i === 0 && lines.length === 1) {
        run.push(line); // a lone ``` is just text
        i += 1;
        continue;
      }
      flush(true);
      const pre = el(ctx, 'pre');
      const code = el(ctx, 'code');
      // After the opening fence: a language name is dropped, any other text is code.
      const info = line.replace(FENCE_RE, '');
      const first = LANGUAGE_RE.test(info.trim()) ? [] : [info];
      code.textContent = [...first, ...lines.slice(i + 1, end)].join('\n');
      pre.append(code);
      parent.append(pre);
      i = end + 1;
      afterBlock();
      continue;
    }
    if (depth < MAX_DEPTH && QUOTE_RE.test(line)) {
      flush(true);
      const quoted = [];
      while (i < lines.length && QUOTE_RE.test(lines[i])) {
        quoted.push(lines[i].replace(QUOTE_RE, ''));
        i += 1;
      }
      const q = el(ctx, 'blockquote');
      blocks(ctx, quoted.join('\n'), q, depth + 1);
      parent.append(q);
      afterBlock();
      continue;
    }
    const listRe = BULLET_RE.test(line) ? BULLET_RE : NUMBER_RE.test(line) ? NUMBER_RE : null;
    if (listRe) {
      flush(true);
      const list = el(ctx, listRe === BULLET_RE ? 'ul' : 'ol');
      while (i < lines.length && listRe.test(lines[i])) {
        const li = el(ctx, 'li');
        inline(ctx, lines[i].replace(listRe, ''), li, depth + 1);
        list.append(li);
        i += 1;
      }
      parent.append(list);
      afterBlock();
      continue;
    }
    run.push(line);
    i += 1;
  }
  flush(false);
}

const isWordish = (ch) => Boolean(ch) && WORDISH.test(ch);
const isSpace = (ch) => !ch || /\s/.test(ch);

/** Where the mark `mark` opened at `from` closes, on the same paragraph, or -1. */
function closing(text, mark, from, { word = false } = {}) {
  let limit = text.indexOf('\n\n', from);
  if (limit < 0) limit = text.length;
  let j = from;
  for (;;) {
    j = text.indexOf(mark, j);
    if (j < 0 || j >= limit) return -1;
    // The mark must hug its text: `* a *` and `**` with nothing inside are not marks.
    if (j > from && !isSpace(text[j - 1]) && (!word || !isWordish(text[j + mark.length]))) return j;
    j += 1;
  }
}

/** Inline marks, links, mentions and shortcodes of one run of text. */
function inline(ctx, text, parent, depth) {
  const urls = ctx.links(text);
  let u = 0; // next URL
  let buf = '';
  const flush = () => {
    if (buf) parent.append(ctx.doc.createTextNode(buf));
    buf = '';
  };
  const wrap = (tag, inner, cls) => {
    flush();
    const e = el(ctx, tag, cls);
    if (depth < MAX_DEPTH) inline(ctx, inner, e, depth + 1);
    else e.textContent = inner;
    parent.append(e);
  };
  let i = 0;
  while (i < text.length) {
    while (u < urls.length && urls[u].start < i) u += 1;
    if (u < urls.length && urls[u].start === i) {
      flush();
      const { end, href } = urls[u];
      const a = el(ctx, 'a');
      a.href = href;
      a.rel = 'noopener noreferrer';
      a.target = '_blank';
      a.textContent = text.slice(i, end);
      parent.append(a);
      i = end;
      continue;
    }
    const c = text[i];
    const next = text[i + 1];
    if (c === '\\' && next && '\\`*_~[]()>#+-.!@:'.includes(next)) {
      buf += next; // an escaped mark is the character itself
      i += 2;
      continue;
    }
    if (c === '`') {
      let n = 1;
      while (text[i + n] === '`') n += 1;
      const fence = '`'.repeat(n);
      const j = text.indexOf(fence, i + n);
      if (j > i + n && !text.slice(i + n, j).includes('\n')) {
        flush();
        const code = el(ctx, 'code');
        code.textContent = text.slice(i + n, j);
        parent.append(code);
        i = j + n;
        continue;
      }
      buf += fence;
      i += n;
      continue;
    }
    if ((c === '*' && next === '*') || (c === '~' && next === '~')) {
      const mark = c + c;
      if (!isSpace(text[i + 2])) {
        const j = closing(text, mark, i + 2);
        if (j > i + 2) {
          wrap(c === '*' ? 'strong' : 'del', text.slice(i + 2, j));
          i = j + 2;
          continue;
        }
      }
      buf += mark;
      i += 2;
      continue;
    }
    if ((c === '*' || c === '_') && !isSpace(next) && !(c === '_' && isWordish(text[i - 1]))) {
      const j = closing(text, c, i + 1, { word: c === '_' });
      if (j > i + 1 && !(c === '*' && text[j + 1] === '*' && text[j - 1] !== '*')) {
        wrap('em', text.slice(i + 1, j));
        i = j + 1;
        continue;
      }
    }
    if (c === '[') {
      LINK_RE.lastIndex = i;
      const m = LINK_RE.exec(text);
      const href = m && ctx.safeHref(m[2]);
      if (href) {
        flush();
        const a = el(ctx, 'a');
        a.href = href;
        a.rel = 'noopener noreferrer';
        a.target = '_blank';
        a.textContent = m[1];
        a.title = href;
        parent.append(a);
        i += m[0].length;
        continue;
      }
    }
    if (c === '@' && !/[A-Za-z0-9._%+-]/.test(text[i - 1] ?? ' ')) {
      NAME_RE.lastIndex = i;
      const m = NAME_RE.exec(text);
      const name = m ? m[1].replace(/[.\-]+$/, '') : '';
      if (name.length >= 3 || ROOM_WORDS.has(name.toLowerCase())) {
        flush();
        const lower = name.toLowerCase();
        let cls = 'mention';
        if (ROOM_WORDS.has(lower)) cls += ' mention-room';
        else if (lower === ctx.me) cls += ' mention-me';
        const span = el(ctx, 'span', cls);
        span.textContent = `@${name}`;
        parent.append(span);
        i += name.length + 1;
        continue;
      }
    }
    if (c === ':') {
      SHORTCODE_RE.lastIndex = i;
      const m = SHORTCODE_RE.exec(text);
      if (m && Object.hasOwn(EMOJI, m[1])) {
        flush();
        const span = el(ctx, 'span', 'emoji');
        span.title = m[0];
        span.textContent = EMOJI[m[1]];
        parent.append(span);
        i += m[0].length;
        continue;
      }
    }
    buf += c;
    i += 1;
  }
  flush();
}
