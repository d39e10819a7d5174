// The job page's log view: numbered lines, each line's full date and time on hover, and a search
// that marks every hit and moves between them ("3 of 12"). Text only ever enters the page through
// text nodes: a hit is a <mark> around a piece of the line's own text node, never markup.

import { el, timeEl } from './dom.js';

/** Hits marked at most: a one-letter search in a long log must not freeze the tab. */
const MAX_HITS = 5000;

function escapeRegExp(text) {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/**
 * One log line: its number (the engine's `seq`, so numbers stay true after older lines were
 * dropped), its time (dom.js timeEl: the page's one time rule, the exact time on hover), its
 * text. Returns null for a non-object.
 */
function lineItem(line) {
  if (!line || typeof line !== 'object') return null;
  const stream = line.stream === 'stderr' ? 'stderr' : 'stdout';
  const seq = Number.isSafeInteger(line.seq) ? line.seq : null;
  return el('li', { class: `log-${stream}`, 'data-testid': 'log-line', 'data-seq': seq, 'data-stream': stream },
    el('span', { class: 'log-no', 'data-testid': 'log-line-number', 'aria-hidden': 'true' }, seq ?? ''),
    el('span', { class: 'log-time', 'data-testid': 'log-line-time' }, timeEl(typeof line.at === 'string' ? line.at : null)),
    el('span', { class: 'log-text' }, typeof line.text === 'string' ? line.text : String(line.text ?? '')));
}

/**
 * The log of one job, drawn into `list` (an <ol>) and searched through `search` (a text input),
 * `counter` (where "3 of 12" is written), `prev` and `next` (buttons). Keeps at most `maxLines`
 * lines; `autoscroll` (a checkbox) keeps the newest line in view while the reader is at the bottom.
 * Returns `{append(lines), count(), note(text)}`.
 */
export function createLogView({ list, search, counter, prev, next, autoscroll, maxLines }) {
  let received = 0;
  let pattern = null;
  let hits = [];
  let capped = false;
  let current = -1;

  /** Wrap every match of `pattern` in the line's text in a <mark>; stops at MAX_HITS overall. */
  function markLine(item) {
    const holder = item.querySelector('.log-text');
    if (!holder) return;
    const text = holder.textContent;
    if (holder.childElementCount) holder.replaceChildren(text);
    if (!pattern || !text) return;
    const parts = [];
    let last = 0;
    pattern.lastIndex = 0;
    for (let match = pattern.exec(text); match; match = pattern.exec(text)) {
      if (hits.length >= MAX_HITS) {
        capped = true;
        break;
      }
      if (match.index > last) parts.push(text.slice(last, match.index));
      const mark = el('mark', { class: 'log-hit', 'data-testid': 'log-hit' }, match[0]);
      parts.push(mark);
      hits.push(mark);
      last = match.index + match[0].length;
    }
    if (!parts.length) return;
    if (last < text.length) parts.push(text.slice(last));
    holder.replaceChildren(...parts);
  }

  function showCount() {
    const any = hits.length > 0;
    prev.disabled = !any;
    next.disabled = !any;
    if (!pattern) counter.textContent = '';
    else if (!any) counter.textContent = 'No matches';
    else counter.textContent = `${current + 1} of ${hits.length}${capped ? '+' : ''}`;
  }

  /** Make hit `index` (wrapping around) the current one and scroll it into the log's view. */
  function select(index) {
    if (hits[current]) hits[current].classList.remove('log-hit-current');
    if (!hits.length) {
      current = -1;
      showCount();
      return;
    }
    current = ((index % hits.length) + hits.length) % hits.length;
    const mark = hits[current];
    mark.classList.add('log-hit-current');
    // Centre it in the log box by the box's own scroll, then let the window move only as far as
    // needed: the search box above the log stays where the reader's eyes are.
    const box = list.getBoundingClientRect();
    const spot = mark.getBoundingClientRect();
    list.scrollTop += spot.top - box.top - (list.clientHeight - spot.height) / 2;
    mark.scrollIntoView({ block: 'nearest', inline: 'nearest' });
    showCount();
  }

  /** Search again from scratch (the query changed): the first hit becomes the current one. */
  function research() {
    const query = search.value;
    pattern = query ? new RegExp(escapeRegExp(query), 'giu') : null;
    hits = [];
    capped = false;
    current = -1;
    for (const item of list.querySelectorAll('li[data-seq]')) markLine(item);
    select(0);
  }

  /** Drop the hits whose lines were trimmed away, keeping the current hit where it is. */
  function forgetTrimmed() {
    const kept = hits.filter((mark) => mark.isConnected);
    if (kept.length === hits.length) return;
    const currentMark = hits[current];
    hits = kept;
    current = currentMark && currentMark.isConnected ? hits.indexOf(currentMark) : (hits.length ? 0 : -1);
  }

  search.addEventListener('input', research);
  search.addEventListener('keydown', (event) => {
    if (event.key === 'Enter') {
      event.preventDefault();
      select(current + (event.shiftKey ? -1 : 1));
    } else if (event.key === 'Escape' && search.value) {
      event.preventDefault();
      search.value = '';
      research();
    }
  });
  prev.addEventListener('click', () => select(current - 1));
  next.addEventListener('click', () => select(current + 1));
  showCount();

  return {
    /** Add lines (the engine's `{seq, at, stream, text}`), marking the hits of the current search. */
    append(lines) {
      const nearBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
      const fragment = document.createDocumentFragment();
      const added = [];
      for (const line of lines) {
        const item = lineItem(line);
        if (!item) continue;
        added.push(item);
        fragment.append(item);
        received += 1;
      }
      const placeholder = list.querySelector('.log-note:not(.log-trimmed)');
      if (placeholder) placeholder.remove();
      list.append(fragment);
      // Bounded DOM: a chatty job must not freeze the tab.
      let excess = list.querySelectorAll('li[data-seq]').length - maxLines;
      for (let oldest = list.querySelector('li[data-seq]'); excess > 0 && oldest; oldest = list.querySelector('li[data-seq]')) {
        oldest.remove(); // the oldest line, never the note above the lines
        excess -= 1;
      }
      if (received > maxLines && !list.querySelector('.log-trimmed')) {
        list.prepend(el('li', { class: 'log-note log-trimmed' }, `Older lines are not shown (only the last ${maxLines}).`));
      }
      if (pattern) {
        forgetTrimmed();
        const hadHits = hits.length > 0;
        for (const item of added) if (item.isConnected) markLine(item);
        // A search that found nothing yet jumps to its first hit once one arrives.
        if (!hadHits && hits.length) select(0);
        else showCount();
      }
      if (autoscroll.checked && nearBottom && current < 0) list.scrollTop = list.scrollHeight;
    },
    /** How many lines were received (shown or trimmed). */
    count() {
      return received;
    },
    /** Show `text` as the log's placeholder when it has no line yet. */
    note(text) {
      if (received === 0 && !list.querySelector('.log-note')) list.append(el('li', { class: 'log-note' }, text));
    },
  };
}
