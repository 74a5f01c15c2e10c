// What a refusal means: an error frame as a sentence for people and what it does to the
// request it answers (a send refused or retried later, a join refused or retried, a
// history page or a peek given up), and the word for a room taken away (room_removed).
// No imports (see app.js): app.js hands this module to defineChat.

const RETRY_SOON_MS = 2000;
const timeFmt = new Intl.DateTimeFormat(undefined, { hour: 'numeric', minute: '2-digit' });
const dateFmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });

/** "until 14:05" (today) or "until 3 Mar 2027, 14:05"; "" for no end. */
export function untilText(ms) {
  if (!Number.isInteger(ms)) return '';
  const d = new Date(ms);
  const today = new Date().toDateString() === d.toDateString();
  return `until ${today ? timeFmt.format(d) : dateFmt.format(d)}`;
}

/** Route an error frame that reached `chat` (a Chat) to the request it answers. */
export function routeError(chat, f) {
  const info = chat.answered(f);
  const room = info && chat.rooms.get(info.room);
  const retryMs = (Number(f.retry_after) || 0) * 1000 || RETRY_SOON_MS;
  if (!info || !room) {
    // Unanswered frames without a ref are typing notices: not worth a notice.
    if (f.code !== 'rate_limited' && f.code !== 'forbidden') chat.view.notice(friendlyError(f));
    return;
  }
  switch (info.kind) {
    case 'send': {
      const clientId = info.clientId ?? f.client_id;
      if (f.reason === 'muted' && Number.isInteger(f.until)) {
        room.setInfo({ muted_until: f.until });
        chat.view.roomInfoChanged(room);
      } else if (f.reason === 'archived') {
        room.setInfo({ archived: true });
        chat.view.roomInfoChanged(room);
      }
      // What a resend with the same client_id can fix is resent (§12); the rest fails.
      if (f.code === 'rate_limited') chat.outbox.rateLimited(room, clientId, retryMs);
      else if (f.code === 'unavailable') chat.outbox.unavailable(room, clientId, friendlyError(f));
      else chat.outbox.refused(room, clientId, friendlyError(f));
      break;
    }
    case 'join':
      if (f.code === 'not_found' || f.code === 'forbidden') {
        if (f.reason === 'banned') {
          const until = untilText(f.until);
          chat.view.notice(`You are banned from ${room.label}${until ? ` ${until}` : ''}.`);
        } else {
          chat.view.notice(`Cannot open ${room.label}: ${f.message || f.code}`);
        }
        chat.dropRoom(room);
      } else {
        room.state = 'idle';
        setTimeout(() => {
          if (chat.online && room.state === 'idle' && chat.rooms.get(room.name) === room) {
            room.join();
          }
        }, retryMs);
      }
      break;
    case 'older':
    case 'after':
      room.historyRefused(info.kind, retryMs);
      break;
    case 'peek':
      room.peeking.delete(info.seq);
      break;
    default:
      break;
  }
}

/** The notice for a room the user was taken out of (kicked, banned) or left, or null. */
export function removedNotice(room, label, f, me) {
  // The event that says who did it usually arrives just before the room_removed frame.
  const ev = [...room.messages].reverse().find((m) => m.type === 'event'
    && (m.event === 'removed' || m.event === 'banned') && m.target?.id === me.id);
  const by = ev?.actor?.name ? ` by ${ev.actor.name}` : '';
  if (f.reason === 'kicked') return `You were removed from ${label}${by}.`;
  if (f.reason === 'banned') {
    const until = untilText(f.until);
    return `You were banned from ${label}${by}${until ? ` ${until}` : ''}.`;
  }
  if (f.reason === 'left') return `You left ${label}.`;
  return null;
}

/** An error frame as a sentence for people. */
export function friendlyError(f) {
  switch (f.code) {
    case 'rate_limited':
      return f.retry_after
        ? `Sending too fast. Wait ${Math.ceil(Number(f.retry_after))} s and retry.`
        : 'Sending too fast. Wait a moment and retry.';
    case 'too_large':
      return 'Message is too long (4000 characters at most).';
    case 'unavailable':
      return 'The server cannot store messages right now.';
    case 'forbidden':
      if (f.reason === 'muted') return `You are muted ${untilText(f.until)}.`.replace(' .', '.');
      if (f.reason === 'archived') return 'This room is archived: it is read-only.';
      return 'You are not allowed to do that here.';
    default:
      return f.message ? String(f.message) : 'Something went wrong.';
  }
}
