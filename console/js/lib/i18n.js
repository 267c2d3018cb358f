// Strings from the catalogue the server put into the page, in the page's language.

const node = document.getElementById('catalogue');
const catalogue = node ? JSON.parse(node.textContent) : {};

export const lang = document.documentElement.lang || 'en';
export const LANGUAGES = ['en', 'de'];

/** The catalogue's text of `key`, with `{name}` placeholders filled in from `vars`. */
export function t(key, vars) {
  const text = Object.prototype.hasOwnProperty.call(catalogue, key) ? catalogue[key] : key;
  if (!vars) return text;
  return text.replace(/\{(\w+)\}/g, (whole, name) => (name in vars ? String(vars[name]) : whole));
}

/** The person's choice, kept in a cookie the server reads when it renders the shell. */
export function setLanguage(choice) {
  document.cookie = `leadline_lang=${choice}; Path=/; SameSite=Strict; Max-Age=31536000`;
  location.reload();
}

const locale = lang === 'de' ? 'de-DE' : 'en-GB';
const dateTime = new Intl.DateTimeFormat(locale, { dateStyle: 'medium', timeStyle: 'short' });
const timeOnly = new Intl.DateTimeFormat(locale, { timeStyle: 'short' });
const dateOnly = new Intl.DateTimeFormat(locale, { dateStyle: 'medium' });

export const fmt = {
  dateTime: (iso) => (iso ? dateTime.format(new Date(iso)) : ''),
  time: (iso) => (iso ? timeOnly.format(new Date(iso)) : ''),
  date: (iso) => (iso ? dateOnly.format(new Date(iso)) : ''),
  /** 75 → "1:15" */
  duration: (seconds) => {
    if (seconds === null || seconds === undefined) return '';
    const s = Math.max(0, Math.round(seconds));
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    const rest = String(s % 60).padStart(2, '0');
    return h ? `${h}:${String(m).padStart(2, '0')}:${rest}` : `${m}:${rest}`;
  },
  number: (n) => new Intl.NumberFormat(locale).format(n),
};
