// Verifies an audit event's inclusion proof in the browser, trusting nothing the server
// says about it: the event shown on the page is hashed here (RFC 8785 JSON, leaf =
// SHA-256(0x00 || bytes)), the RFC 9162 audit path is walked with WebCrypto SHA-256 (node =
// SHA-256(0x01 || left || right)), and the result must equal the signed checkpoint's root;
// the checkpoint's Ed25519 signature is checked too where the browser supports Ed25519.
// Without script, the "Verify proof" link opens the proof as JSON.
"use strict";

(function () {
  const encoder = new TextEncoder();

  // RFC 8785: object keys sorted by UTF-16 code units (Array.prototype.sort's order),
  // primitives serialised as ECMAScript's JSON.stringify does.
  function canonical(value) {
    if (value === null || typeof value !== "object") {
      return JSON.stringify(value);
    }
    if (Array.isArray(value)) {
      return "[" + value.map(canonical).join(",") + "]";
    }
    return "{" + Object.keys(value).sort().map(
      (k) => JSON.stringify(k) + ":" + canonical(value[k])).join(",") + "}";
  }

  function fromBase64(text) {
    return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
  }

  async function sha256(...parts) {
    const length = parts.reduce((n, p) => n + p.length, 0);
    const joined = new Uint8Array(length);
    let at = 0;
    for (const p of parts) {
      joined.set(p, at);
      at += p.length;
    }
    return new Uint8Array(await crypto.subtle.digest("SHA-256", joined));
  }

  const leafHash = (bytes) => sha256(Uint8Array.of(0), bytes);
  const nodeHash = (left, right) => sha256(Uint8Array.of(1), left, right);

  function same(a, b) {
    return a.length === b.length && a.every((x, i) => x === b[i]);
  }

  const half = (n) => Math.floor(n / 2);
  const odd = (n) => n % 2 === 1;

  // RFC 9162 section 2.1.3.2: the root the audit path leads to, or null if it cannot.
  async function rootOf(leaf, index, size, path) {
    if (!(index >= 0 && index < size)) {
      return null;
    }
    let fn = index;
    let sn = size - 1;
    let r = leaf;
    for (const p of path) {
      if (p.length !== 32 || sn === 0) {
        return null;
      }
      if (odd(fn) || fn === sn) {
        r = await nodeHash(p, r);
        while (fn !== 0 && !odd(fn)) {
          fn = half(fn);
          sn = half(sn);
        }
      } else {
        r = await nodeHash(r, p);
      }
      fn = half(fn);
      sn = half(sn);
    }
    return sn === 0 ? r : null;
  }

  // True, false, or null when this browser's WebCrypto has no Ed25519.
  async function signatureValid(cp) {
    const message = encoder.encode(canonical(
      {size: cp.size, root: cp.root, timestamp: cp.timestamp}));
    let key;
    try {
      key = await crypto.subtle.importKey("raw", fromBase64(cp.public_key),
        {name: "Ed25519"}, false, ["verify"]);
    } catch (e) {
      return null;
    }
    return crypto.subtle.verify({name: "Ed25519"}, key, fromBase64(cp.signature), message);
  }

  // What the proof shows about the event: "verified" or why it does not verify.
  async function check(event, index, body) {
    const cp = body.checkpoint;
    if (body.index !== index || body.size !== cp.size) {
      return [false, "the proof is for another event or tree"];
    }
    const leaf = await leafHash(encoder.encode(canonical(event)));
    if (!same(leaf, fromBase64(body.leaf_hash))) {
      return [false, "the event shown differs from the one in the log"];
    }
    const root = await rootOf(leaf, index, body.size, body.proof.map(fromBase64));
    if (root === null || !same(root, fromBase64(cp.root))) {
      return [false, "the audit path does not lead to the checkpoint's root"];
    }
    const signed = await signatureValid(cp);
    if (signed === false) {
      return [false, "the checkpoint's signature is wrong"];
    }
    const when = cp.timestamp.slice(0, 19).replace("T", " ") + " UTC";
    return [true, signed === null
      ? `in checkpoint ${cp.size} of ${when}; this browser cannot check its signature`
      : `in checkpoint ${cp.size}, signed ${when}`];
  }

  async function verify(link) {
    const out = document.getElementById(link.getAttribute("aria-describedby"));
    out.className = "proof-result";
    out.textContent = "checking…";
    let verdict;
    try {
      const response = await fetch(link.href, {credentials: "same-origin",
        headers: {Accept: "application/json"}});
      // A session that ended was sent to the sign-in page: HTML, not a proof.
      if (!(response.headers.get("content-type") || "").startsWith("application/json")) {
        throw new Error(response.ok ? "your session has ended: sign in again"
          : `the server answered ${response.status}`);
      }
      const body = await response.json();
      if (!response.ok) {
        throw new Error(body.problem || `the server answered ${response.status}`);
      }
      const event = JSON.parse(link.dataset.event);
      const [ok, why] = await check(event, Number(link.dataset.index), body);
      verdict = [ok ? "verified" : "does not verify", why, ok ? "ok" : "bad"];
    } catch (e) {
      verdict = ["not checked", e.message, "unknown"];
    }
    out.textContent = `${verdict[0]}: ${verdict[1]}`;
    out.classList.add(verdict[2]);
  }

  document.addEventListener("click", (e) => {
    const link = e.target.closest("a[data-proof]");
    if (link) {
      e.preventDefault();
      verify(link);
    }
  });
})();
