// Number and time formats. Displayed text uses en-US grouping so it reads
// the same in every browser; the machine-readable values the cards expose in
// data-value are documented in ../README.md.

const intFmt = new Intl.NumberFormat('en-US', {maximumFractionDigits: 0});

export const DASH = '—';

export function isNum(v) {
  return typeof v === 'number' && Number.isFinite(v);
}

/** 1234 → "1,234"; null → "—". */
export function int(n) {
  return isNum(n) ? intFmt.format(n) : DASH;
}

/** 1234567 → "1.23M", 12345 → "12.3k", 999 → "999". */
export function compact(n) {
  if (!isNum(n)) return DASH;
  const a = Math.abs(n);
  if (a >= 1e9) return trim((n / 1e9).toFixed(a >= 1e10 ? 1 : 2)) + 'B';
  if (a >= 1e6) return trim((n / 1e6).toFixed(a >= 1e7 ? 1 : 2)) + 'M';
  if (a >= 1e4) return trim((n / 1e3).toFixed(1)) + 'k';
  return intFmt.format(n);
}

function trim(s) {
  return s.includes('.') ? s.replace(/\.?0+$/, '') : s;
}

/** Micro-dollars → "$12.35", "$0.0730", "$0.000073"; null → "—". */
export function usd(micros) {
  if (!isNum(micros)) return DASH;
  const d = micros / 1e6;
  if (micros === 0) return '$0.00';
  if (Math.abs(micros) >= 1e6) return '$' + d.toLocaleString('en-US', {minimumFractionDigits: 2, maximumFractionDigits: 2});
  if (Math.abs(micros) >= 1e4) return '$' + d.toFixed(4);
  return '$' + d.toFixed(6);
}

/** Milliseconds → "0.42 ms", "8.3 ms", "412 ms", "1.50 s", "2.1 min"; null → "—". */
export function ms(v) {
  if (!isNum(v)) return DASH;
  const a = Math.abs(v);
  if (a < 1) return v.toFixed(2) + ' ms';
  if (a < 10) return v.toFixed(1) + ' ms';
  if (a < 1000) return v.toFixed(0) + ' ms';
  if (a < 60000) return (v / 1000).toFixed(2) + ' s';
  return (v / 60000).toFixed(1) + ' min';
}

/** 0.037 → "3.70%". */
export function pct(rate) {
  return isNum(rate) ? (rate * 100).toFixed(2) + '%' : DASH;
}

const pad = (n) => String(n).padStart(2, '0');

/** An RFC 3339 time → local "14:03:27" (today) or "Nov 21 14:03:27". */
export function time(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso ?? DASH);
  const hms = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  const now = new Date();
  if (d.toDateString() === now.toDateString()) return hms;
  return `${d.toLocaleString('en-US', {month: 'short'})} ${d.getDate()} ${hms}`;
}

/** Full local date and time with milliseconds, for titles and the trace view. */
export function dateTime(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso ?? DASH);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${String(d.getMilliseconds()).padStart(3, '0')}`;
}

/** Axis label for a bucket start, given the bucket width in ms. */
export function axisTime(iso, widthMs) {
  const d = new Date(iso);
  if (widthMs >= 86400000) return `${d.toLocaleString('en-US', {month: 'short'})} ${d.getDate()}`;
  return `${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

/** "1m" / "15m" / "1h" / "6h" / "1d" → milliseconds. */
export function durationMs(s) {
  const m = /^(\d+)([smhd])$/.exec(String(s || ''));
  if (!m) return 0;
  return Number(m[1]) * {s: 1e3, m: 6e4, h: 36e5, d: 864e5}[m[2]];
}

/** Axis label for milliseconds: "0", "250ms", "1.5s". */
export function axisMs(v) {
  if (!isNum(v) || v === 0) return '0';
  if (Math.abs(v) < 1000) return `${trim(v.toPrecision(3))}ms`;
  return `${trim((v / 1000).toPrecision(3))}s`;
}
