// A popup menu of buttons, opened by a button: the WAI-ARIA menu button pattern.
// Enter, Space or ArrowDown on the button opens it on the first item (ArrowUp: the
// last); arrows, Home and End move; Enter or a click runs an item; Escape or Tab
// closes it and gives focus back to the button; so does a click elsewhere. One menu is
// open at a time. Built on render.js's h(), which app.js passes in (no imports: see
// app.js).

export class Menus {
  constructor({ h }) {
    this.h = h;
    this.open = null; // {button, el, onKey, onDown}
  }

  /**
   * Make `button` open a menu of `items()` (called at each opening, so it reflects
   * the state of the moment): [{label, action, testid?, danger?}] and 'separator'.
   */
  attach(button, items, { signal } = {}) {
    button.setAttribute('aria-haspopup', 'menu');
    button.setAttribute('aria-expanded', 'false');
    button.addEventListener('click', () => {
      if (this.open?.button === button) this.close();
      else this.show(button, items(), 'first');
    }, { signal });
    button.addEventListener('keydown', (ev) => {
      if (ev.key === 'ArrowDown' || ev.key === 'ArrowUp') {
        ev.preventDefault();
        this.show(button, items(), ev.key === 'ArrowUp' ? 'last' : 'first');
      }
    }, { signal });
  }

  show(button, items, focus = 'first') {
    this.close(false);
    const h = this.h;
    const el = h('ul', { class: 'menu', role: 'menu', 'data-testid': 'menu' });
    if (button.id) el.setAttribute('aria-labelledby', button.id);
    for (const item of items) {
      if (item === 'separator') {
        el.append(h('li', { role: 'separator', class: 'menu-sep' }));
        continue;
      }
      const btn = h('button', {
        type: 'button', role: 'menuitem', tabindex: '-1', class: item.danger ? 'danger' : false,
        'data-testid': item.testid ?? 'menu-item',
      }, item.label);
      btn.addEventListener('click', () => {
        this.close();
        item.action();
      });
      el.append(h('li', { role: 'none' }, btn));
    }
    if (!el.querySelector('button')) return;
    document.body.append(el);
    this._place(button, el);
    button.setAttribute('aria-expanded', 'true');
    const onKey = (ev) => this._key(ev);
    const onDown = (ev) => {
      if (!el.contains(ev.target) && !button.contains(ev.target)) this.close(false);
    };
    el.addEventListener('keydown', onKey);
    document.addEventListener('pointerdown', onDown, true);
    this.open = { button, el, onDown };
    const buttons = this._items();
    (focus === 'last' ? buttons[buttons.length - 1] : buttons[0]).focus();
  }

  /** Close the open menu; focus goes back to its button unless `refocus` is false. */
  close(refocus = true) {
    const o = this.open;
    if (!o) return;
    this.open = null;
    document.removeEventListener('pointerdown', o.onDown, true);
    const hadFocus = o.el.contains(document.activeElement);
    o.el.remove();
    o.button.setAttribute('aria-expanded', 'false');
    if (refocus && hadFocus && o.button.isConnected) o.button.focus();
  }

  _items() {
    return this.open ? [...this.open.el.querySelectorAll('button[role="menuitem"]')] : [];
  }

  _key(ev) {
    const items = this._items();
    const i = items.indexOf(document.activeElement);
    const go = (n) => {
      ev.preventDefault();
      items[(n + items.length) % items.length]?.focus();
    };
    switch (ev.key) {
      case 'ArrowDown': go(i + 1); break;
      case 'ArrowUp': go(i - 1); break;
      case 'Home': go(0); break;
      case 'End': go(items.length - 1); break;
      case 'Escape':
        ev.preventDefault();
        ev.stopPropagation(); // an open drawer stays open
        this.close();
        break;
      case 'Tab':
        this.close();
        break;
      default: break;
    }
  }

  /** Below the button, right-aligned with it; above it when there is no room below. */
  _place(button, el) {
    const r = button.getBoundingClientRect();
    const m = el.getBoundingClientRect();
    const left = Math.max(8, Math.min(r.right - m.width, window.innerWidth - m.width - 8));
    let top = r.bottom + 4;
    if (top + m.height > window.innerHeight - 8) top = Math.max(8, r.top - m.height - 4);
    el.style.left = `${Math.round(left)}px`;
    el.style.top = `${Math.round(top)}px`;
  }
}
