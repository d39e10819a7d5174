// The one rule for time on every page (docs/gateway.md, "Times"). Every time the panel shows is in
// one zone, named in the header: UTC by default, or the browser's local zone when the person chose
// it (remembered per browser in localStorage). This module is the only place that formats times,
// durations and relative ages, and the only place that reads or writes the chosen zone:
//  - <time data-local-time datetime="..."> anywhere: text and hover title in the chosen zone
//    (with data-relative: "3 min ago" as text, the exact time on hover);
//  - [data-duration] elements (data-started, data-ended): elapsed time, ticking while not ended;
//  - <input type="datetime-local" data-zone-input>: shown in the chosen zone, sent as RFC 3339 UTC
//    (every form submission and every `new FormData(form)` goes through the formdata event);
//  - [data-zone-name]: text set to the zone's name (put one in the label of each zone input);
//    the header switch (#time-zone-switch).
// The server renders UTC text for the no-JavaScript case; this module rewrites it.

export const STORAGE_KEY = 'engineJobs.timeZone';
const MODES = ['utc', 'local'];
/** How often relative times and running durations are redrawn. */
const TICK_MS = 1000;

/** The chosen mode: 'utc' (default) or 'local'; an unreadable or odd stored value means 'utc'. */
export function zoneMode() {
  try {
    const stored = window.localStorage.getItem(STORAGE_KEY);
    return MODES.includes(stored) ? stored : 'utc';
  } catch {
    return 'utc'; // storage disabled: the default, every time
  }
}

/** The IANA name of the browser's own zone ("Europe/Berlin"), or "local time" when it has none. */
export function localZoneName() {
  try {
    return Intl.DateTimeFormat().resolvedOptions().timeZone || 'local time';
  } catch {
    return 'local time';
  }
}

/** The name of the zone every time is shown in: "UTC" or the local zone's name. */
export function zoneName(mode = zoneMode()) {
  return mode === 'local' ? localZoneName() : 'UTC';
}

function pad(value, size = 2) {
  return String(value).padStart(size, '0');
}

/** The calendar fields of `date` in the zone of `mode`. */
function fields(date, mode) {
  if (mode === 'local') {
    return [date.getFullYear(), date.getMonth() + 1, date.getDate(), date.getHours(), date.getMinutes(), date.getSeconds()];
  }
  return [date.getUTCFullYear(), date.getUTCMonth() + 1, date.getUTCDate(), date.getUTCHours(), date.getUTCMinutes(), date.getUTCSeconds()];
}

function parse(iso) {
  if (!iso) return null;
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? null : date;
}

/**
 * `iso` (RFC 3339) as "2026-12-04 14:37:05" in the chosen zone (the header names the zone);
 * the raw value when it is no time. The filters accept this form back.
 */
export function formatTime(iso, mode = zoneMode()) {
  const date = parse(iso);
  if (!date) return String(iso ?? '');
  const [y, mo, d, h, mi, s] = fields(date, mode);
  return `${pad(y, 4)}-${pad(mo)}-${pad(d)} ${pad(h)}:${pad(mi)}:${pad(s)}`;
}

/** `iso` with the zone named: the hover text of every time ("2026-12-04 14:37:05 UTC"). */
export function exactTime(iso, mode = zoneMode()) {
  return parse(iso) ? `${formatTime(iso, mode)} ${zoneName(mode)}` : String(iso ?? '');
}

/**
 * A span of `ms` milliseconds as "45s", "3m 05s", "2h 03m", "3d 4h" (admin_gateway/http/templates.py
 * duration_text renders the same for the no-JavaScript page: keep the two in step).
 */
export function formatDuration(ms) {
  const total = Math.max(0, Math.floor(ms / 1000));
  const days = Math.floor(total / 86400);
  const hours = Math.floor((total % 86400) / 3600);
  const minutes = Math.floor((total % 3600) / 60);
  const seconds = total % 60;
  if (days) return `${days}d ${hours}h`;
  if (hours) return `${hours}h ${pad(minutes)}m`;
  if (minutes) return `${minutes}m ${pad(seconds)}s`;
  return `${seconds}s`;
}

/** How long ago `iso` was, from `now`: "just now", "42 s ago", "3 min ago", "5 h ago", "2 days ago". */
export function relativeTime(iso, now = Date.now()) {
  const date = parse(iso);
  if (!date) return String(iso ?? '');
  const seconds = Math.round((now - date.getTime()) / 1000);
  if (seconds < -60) return `in the future (${formatTime(iso)})`; // clocks disagree: say so, do not lie
  if (seconds < 10) return 'just now';
  if (seconds < 60) return `${seconds} s ago`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ago`;
  const hours = Math.floor(minutes / 60);
  if (hours < 48) return `${hours} h ago`;
  const days = Math.floor(hours / 24);
  return days < 60 ? `${days} days ago` : formatTime(iso);
}

/** Redraw one <time data-local-time> (its datetime attribute is the truth). */
function drawTime(node, now) {
  const iso = node.getAttribute('datetime');
  if (!iso || !parse(iso)) return;
  const text = node.hasAttribute('data-relative') ? relativeTime(iso, now) : formatTime(iso);
  if (node.textContent !== text) node.textContent = text;
  node.setAttribute('title', exactTime(iso));
}

/** Redraw one [data-duration]: started → ended, or → now while it has not ended (ticking). */
export function drawDuration(node, now = Date.now()) {
  const started = parse(node.dataset.started);
  if (!started) return;
  const ended = parse(node.dataset.ended);
  const text = formatDuration((ended ? ended.getTime() : now) - started.getTime());
  if (node.textContent !== text) node.textContent = text;
  const from = exactTime(node.dataset.started);
  node.setAttribute('title', ended ? `From ${from} to ${exactTime(node.dataset.ended)}` : `Running since ${from}`);
}

/** Draw every time and duration under `root` in the chosen zone. */
export function applyTimes(root = document) {
  const now = Date.now();
  for (const node of root.querySelectorAll('time[data-local-time]')) drawTime(node, now);
  for (const node of root.querySelectorAll('[data-duration]')) drawDuration(node, now);
}

// ---------- datetime-local inputs ----------

const LOCAL_VALUE = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2}))?/;

/** The instant a datetime-local value means when read in the zone of `mode`, or null. */
function instantOf(value, mode) {
  const match = LOCAL_VALUE.exec(value || '');
  if (!match) return null;
  const [y, mo, d, h, mi, s] = match.slice(1).map((part) => Number(part || 0));
  const date = mode === 'local' ? new Date(y, mo - 1, d, h, mi, s) : new Date(Date.UTC(y, mo - 1, d, h, mi, s));
  return Number.isNaN(date.getTime()) ? null : date;
}

/** A datetime-local value showing `date` in the zone of `mode` (seconds only when not zero). */
function inputValue(date, mode) {
  const [y, mo, d, h, mi, s] = fields(date, mode);
  return `${pad(y, 4)}-${pad(mo)}-${pad(d)}T${pad(h)}:${pad(mi)}${s ? `:${pad(s)}` : ''}`;
}

/** The zone an input's value is currently written in: the server writes UTC. */
function shownMode(input) {
  return MODES.includes(input.dataset.zoneShown) ? input.dataset.zoneShown : 'utc';
}

/**
 * What a zone input means, as RFC 3339 UTC ("2026-12-04T13:37:00Z"); '' when empty, the raw
 * value when the browser let through something that is no time (the server refuses it clearly).
 */
export function zoneInputValue(input) {
  const value = input.value.trim();
  if (!value) return '';
  const date = instantOf(value, shownMode(input));
  return date ? date.toISOString().replace(/\.\d{3}Z$/, 'Z') : value;
}

/** Rewrite every zone input under `root` into the chosen zone (the instant it means is kept). */
function applyZoneInputs(root = document) {
  const mode = zoneMode();
  for (const input of root.querySelectorAll('input[type="datetime-local"][data-zone-input]')) {
    if (input.dataset.zoneShown === mode) continue;
    const from = shownMode(input);
    const date = from === mode ? null : instantOf(input.value, from);
    if (date) input.value = inputValue(date, mode);
    input.dataset.zoneShown = mode;
  }
}

/** Every submission (and every `new FormData(form)`) carries zone inputs as RFC 3339 UTC. */
function onFormData(event) {
  for (const input of event.target.querySelectorAll('input[type="datetime-local"][data-zone-input][name]')) {
    if (input.disabled) continue;
    event.formData.set(input.name, zoneInputValue(input));
  }
}

// ---------- the switch ----------

function drawZoneNames() {
  const mode = zoneMode();
  for (const node of document.querySelectorAll('[data-zone-name]')) node.textContent = zoneName(mode);
  const button = document.getElementById('time-zone-switch');
  if (button) {
    const other = mode === 'local' ? 'UTC' : `your local time (${localZoneName()})`;
    button.setAttribute('title', `Times are shown in ${zoneName(mode)}. Press to show them in ${other}.`);
  }
}

/** Choose the zone of every time (remembered in this browser) and redraw the page in it. */
export function setZoneMode(mode) {
  const next = MODES.includes(mode) ? mode : 'utc';
  try {
    window.localStorage.setItem(STORAGE_KEY, next);
  } catch {
    // Not remembered (storage disabled); this page still follows the choice until it is left.
  }
  redraw();
  document.dispatchEvent(new CustomEvent('time-zone-change', { detail: { mode: next } }));
}

function redraw() {
  drawZoneNames();
  applyTimes(document);
  applyZoneInputs(document);
}

/**
 * Start the rule on this page: draw every time, name the zone, wire the header switch, convert
 * zone inputs (including ones added later), and redraw relative times and running durations
 * every second. Another tab's choice is followed at once (the storage event).
 */
export function initTime() {
  redraw();
  const button = document.getElementById('time-zone-switch');
  if (button) {
    button.addEventListener('click', () => setZoneMode(zoneMode() === 'local' ? 'utc' : 'local'));
  }
  window.addEventListener('storage', (event) => {
    if (event.key === STORAGE_KEY) redraw();
  });
  document.addEventListener('formdata', onFormData, true);
  // Inputs built by scripts (dialogs, filters) follow the rule as soon as they are in the page.
  new MutationObserver(() => applyZoneInputs(document)).observe(document.body, { childList: true, subtree: true });
  window.setInterval(() => {
    const now = Date.now();
    for (const node of document.querySelectorAll('time[data-local-time][data-relative]')) drawTime(node, now);
    for (const node of document.querySelectorAll('[data-duration]:not([data-ended])')) drawDuration(node, now);
  }, TICK_MS);
}
