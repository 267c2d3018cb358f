// Signing in, and on the first start, setting up the first admin with the admin token the
// gateway printed (or took from LEADLINE_ADMIN_TOKEN).

import { h, mount } from '../lib/dom.js';
import { t } from '../lib/i18n.js';
import { api, ApiError } from '../lib/api.js';
import { form } from '../lib/form.js';

export async function signInPage(root, signedIn) {
  document.title = `${t('signin.title')} · ${t('app.name')}`;
  const signIn = form({
    resource: 'session',
    submit: 'signin.submit',
    fields: [
      { name: 'email', type: 'email', label: 'signin.email', required: true, autocomplete: 'username' },
      { name: 'password', type: 'password', label: 'signin.password', required: true, autocomplete: 'current-password' },
    ],
    onSubmit: async (values) => {
      try {
        signedIn(await api.post('/session', values, { quiet: true }));
      } catch (err) {
        throw friendly(err);
      }
    },
  });
  signIn.id = 'signin';
  const box = h('div', { class: 'signin-box' },
    h('h1', { tabindex: '-1' }, t('app.name')),
    h('p', { class: 'lede' }, t('signin.lede')),
    signIn);
  mount(root, h('main', { id: 'main', class: 'signin' }, box));
  signIn.querySelector('[name="email"]').focus();

  let needed = false;
  try {
    needed = (await api.get('/session/setup', null, { quiet: true })).needed;
  } catch {
    needed = false;
  }
  if (needed) box.append(setupForm(signedIn));
}

function setupForm(signedIn) {
  const setup = form({
    resource: 'setup',
    submit: 'setup.submit',
    fields: [
      { name: 'token', type: 'password', label: 'setup.token', required: true, help: 'setup.token_help', autocomplete: 'off' },
      { name: 'name', label: 'common.name', required: true, autocomplete: 'name' },
      { name: 'email', type: 'email', label: 'signin.email', required: true, autocomplete: 'username' },
      { name: 'password', type: 'password', label: 'signin.new_password', required: true, help: 'users.password_help', autocomplete: 'new-password' },
    ],
    onSubmit: async (values) => {
      try {
        signedIn(await api.post('/session/setup', values, { quiet: true }));
      } catch (err) {
        throw friendly(err);
      }
    },
  });
  setup.id = 'setup';
  return h('section', { class: 'setup' },
    h('h2', {}, t('setup.title')),
    h('p', {}, t('setup.lede')),
    setup);
}

/** The API's answers, in the words of this page. */
function friendly(err) {
  if (!(err instanceof ApiError)) return err;
  const known = {
    invalid_credentials: 'signin.invalid',
    invalid_token: 'setup.bad_token',
    too_many_attempts: 'signin.throttled',
    already_set_up: 'setup.done',
  };
  if (known[err.code]) {
    const copy = new ApiError(err.status, { error: { code: err.code, message: t(known[err.code], { minutes: Math.ceil((err.retryAfter || 600) / 60) }), field: err.field } });
    return copy;
  }
  return err;
}
