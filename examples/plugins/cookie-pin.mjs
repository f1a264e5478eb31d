// An example switchyard plugin: pin requests to a role by a cookie.
//
//   plugins: ["./examples/plugins/cookie-pin.mjs"]
//   components:
//     pins:
//       type: cookie_table                 # cookie value → role name
//       metadata: { alice: cart-v2, bob: cart-v1 }
//   listeners:
//     cart:
//       filters:
//         - { type: cookie_pin, cookie: user, component: pins }
//         - { type: weighted, weights: { cart-v1: 90, cart-v2: 10 } }
//
// The table lives in a component, so `POST /components/pins` with new metadata
// updates it in place (no re-init, no new filter chains) while traffic flows.
// It registers through the same registry calls as switchyard's built-in types.

const NAME_RE = /^[A-Za-z0-9_-]+$/;

/** The cookie value → role table; updated in place on applyConfig. */
class CookieTable {
  #table = new Map();

  async init(metadata) {
    this.#table = new Map(Object.entries(metadata));
  }

  async ready() {
    return true;
  }

  async applyConfig(metadata) {
    this.#table = new Map(Object.entries(metadata));
    return { needReload: false };
  }

  async close() {
    this.#table.clear();
  }

  /** The role name for a cookie value, or undefined. */
  roleFor(value) {
    return this.#table.get(value);
  }
}

/** The value of cookie `name` in a Cookie header, or undefined. */
function cookieValue(header, name) {
  if (!header) return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

export function register(registry) {
  registry.registerComponent({
    type: 'cookie_table',
    validate(metadata, ctx) {
      for (const [value, role] of Object.entries(metadata)) {
        if (!NAME_RE.test(role)) ctx.report('SY_ERR_CONFIG_NAME', value, `"${role}" is not a role name`);
      }
    },
    create: () => new CookieTable(),
  });

  registry.registerFilter({
    type: 'cookie_pin',
    scope: 'http',
    // Once per config: check the filter's own keys and its component reference, with
    // the context's typed checks (the ones switchyard's own config and built-ins use).
    validate(raw, ctx) {
      ctx.allowKeys(raw, ['cookie', 'component']);
      // A cookie name is a token (RFC 6265 §4.1.1), the syntax of a header name.
      const cookie = ctx.headerName(raw.cookie, ['cookie'], { required: true, message: 'must be a cookie name' });
      const component = ctx.component(raw.component, ['component'], ['cookie_table']);
      return { cookie, component };
    },
    // Once per generation: resolve the component and the role indexes.
    create(config, ctx) {
      const table = ctx.component(config.component);
      const indexOf = new Map(ctx.roles.map((r, i) => [r.name, i]));
      // Per request (hot path): no allocation beyond the cookie parse.
      return function cookiePin(ex) {
        if (ex.role >= 0) return true;
        const value = cookieValue(ex.req.headers.cookie, config.cookie);
        if (value !== undefined) {
          const i = indexOf.get(table.roleFor(value));
          if (i !== undefined) ex.role = i;
        }
        return true;
      };
    },
  });
}
