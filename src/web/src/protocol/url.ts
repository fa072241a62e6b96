/** What the URL is derived from (window.location's shape). */
export interface LocationLike {
  protocol: string;
  host: string;
}

/** A session id for the route's {1-128 of [A-Za-z0-9_-]} segment. */
export function newSessionId(random: () => number = Math.random): string {
  const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789";
  let id = "editor-";
  for (let i = 0; i < 16; i++) id += alphabet[Math.floor(random() * alphabet.length) % alphabet.length];
  return id;
}

/**
 * The writeup WebSocket on the page's own origin: wss for https pages, ws otherwise. Same origin,
 * so it works behind the compose / k8s proxies that serve the page.
 */
export function writeupSocketUrl(location: LocationLike, sessionId: string): string {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/ws/async/writeup/text_generation/session/${encodeURIComponent(sessionId)}/`;
}
