// The hub's API with the signed-in token (sessionStorage: gone with the tab).
const KEY = "cpnet.token";

export class ApiError extends Error {
  constructor(public status: number, message: string) {
    super(message);
  }
}

export function token(): string | null {
  return sessionStorage.getItem(KEY);
}

export function setToken(value: string | null): void {
  if (value) sessionStorage.setItem(KEY, value);
  else sessionStorage.removeItem(KEY);
}

export async function get<T>(path: string): Promise<T> {
  const r = await fetch(path, { headers: { authorization: `Bearer ${token() ?? ""}` } });
  if (!r.ok) {
    let message = `HTTP ${r.status}`;
    try {
      message = (await r.json()).error?.message ?? message;
    } catch {
      /* not JSON */
    }
    throw new ApiError(r.status, message);
  }
  return (await r.json()) as T;
}

/** Server-sent events over fetch (EventSource cannot send the Authorization header): calls
 * `onEvent` with each event's parsed data, reconnecting after a failure, until `signal` aborts. */
export async function stream(
  path: string,
  onEvent: (data: unknown) => void,
  onState: (live: boolean) => void,
  signal: AbortSignal,
): Promise<void> {
  while (!signal.aborted) {
    try {
      const r = await fetch(path, {
        headers: { authorization: `Bearer ${token() ?? ""}`, accept: "text/event-stream" },
        signal,
      });
      if (!r.ok || !r.body) throw new ApiError(r.status, `HTTP ${r.status}`);
      onState(true);
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let end: number;
        while ((end = buf.indexOf("\n\n")) >= 0) {
          const chunk = buf.slice(0, end);
          buf = buf.slice(end + 2);
          const data = chunk
            .split("\n")
            .filter((l) => l.startsWith("data:"))
            .map((l) => l.slice(5).trimStart())
            .join("\n");
          if (data) onEvent(JSON.parse(data));
        }
      }
    } catch (e) {
      if (signal.aborted) return;
      if (e instanceof ApiError && (e.status === 401 || e.status === 403)) throw e;
    }
    onState(false);
    await new Promise((res) => setTimeout(res, 1500));
  }
}
