// The example's feed: each signed submission pushed to whoever listens on /feed.
export const FEED_ROUNDS = 3; // a new listener first hears this many rounds back
export const FEED_WAIT_MS = 1000; // how long an auditor waits on a feed before using IPFS
export const listeners = new Set();
export const stats = { auditsFromFeed: 0 };

export function publish(item) {
  const text = JSON.stringify(item);
  for (const ws of listeners) {
    try {
      ws.send(text);
    } catch {
      listeners.delete(ws);
    }
  }
}
