// K2 live dashboard: plain ES module, no build step. The API contract is docs/api.md.
//
// Data flow
//   GET /v1/symbols                 -> the symbol selector (grouped by exchange)
//   GET /v1/ohlcv/{tf}              -> the chart's initial 300 buckets, and catch-up after a (re)subscription
//   WS  /v1/stream                  -> `candles` messages (stored timeframes) and `trades` messages for the
//                                      selected pair and the same base asset on the other exchanges
//   GET /v1/trades                  -> the tape's initial rows and catch-up after a (re)subscription
//   GET /v1/ohlcv/1m (last close)   -> the cross-exchange panel's initial prices
//   GET /v1/status every 2 s        -> the pipeline panel (and the server clock)
//
// Prices, quantities and volumes are exact decimal strings: the tape, the legend and the comparison panel show
// those strings as they came; Number() is used only to draw. Times are integer microseconds (UTC); the chart
// wants seconds.
//
// Timeframes the server stores (1m 5m 15m 30m 1h 1d) are streamed: a candle update carries the whole stored
// candle of every bucket the new trades touched, so it simply replaces our copy. Rolled-up timeframes (4h, 1w)
// are not streamed by the API; for those the page re-fetches the last two buckets every 5 s (exact, because the
// API rolls them up from stored candles; folding 1m updates client-side would double-count volume whenever a 1m
// bucket is updated twice).
//
// Ordering: a fetch and a stream message can race. Every stored candle of a bucket only grows, so between two
// copies of the same bucket the one with more trades (trade_count) wins; trades are deduplicated by
// (exchange, trade_id). After every `subscribed` answer (first connection and each reconnection) the page
// fetches what it may have missed since the newest candle and trade it holds.

const LWC = window.LightweightCharts;

const STORED = new Set(["1m", "5m", "15m", "30m", "1h", "1d"]);
const UNIT_S = { m: 60, h: 3600, d: 86400, w: 604800 };
const WEEK_OFFSET_S = 4 * 86400; // weeks start on Monday 00:00 UTC (the epoch was a Thursday)
const N_BUCKETS = 300;
const MAX_CANDLES = 2000; // older candles are dropped from the chart past this
const TAPE_MAX = 50;
const STATUS_EVERY_MS = 2000;
const ROLLUP_EVERY_MS = 5000;
const EXCHANGE_ORDER = ["binance", "kraken", "coinbase"];
const COLORS = { up: "#26a69a", down: "#ef5350", upVol: "rgba(38,166,154,0.55)", downVol: "rgba(239,83,80,0.55)" };

const params = new URLSearchParams(location.search);
const API_KEY = params.get("api_key");

const $ = (id) => document.getElementById(id);

const state = {
  symbols: [], // [{exchange, symbol, native_symbol, base, quote}]
  sel: null, // the selected symbol row
  tf: "1m",
  gen: 0, // selection generation: answers for an older selection are dropped
  range: null, // {start, end} µs of the initial candle fetch
  candles: new Map(), // bucket (s) -> raw candle from the API (exact strings)
  lastTime: null, // newest bucket (s) on the chart
  precision: 2,
  loadedGen: -1, // gen whose initial load has finished
  tape: [], // newest first
  tapeKeys: new Set(),
  freshKeys: new Set(),
  compare: [], // [{exchange, symbol, price, ts, source}]
  ws: null,
  wsGen: 0,
  wsBackoffMs: 500,
  wsRetryTimer: null,
  conn: "connecting",
  subscribed: false,
  messages: { trades: 0, candles: 0, other: 0 },
  clockOffsetUs: 0, // server now - browser now
  rollupTimer: null,
  renderQueued: new Set(),
};

// -- helpers ------------------------------------------------------------------------------------------------

function nowUs() {
  return Date.now() * 1000 + state.clockOffsetUs;
}

function tfSeconds(tf) {
  const m = /^(\d+)([mhdw])$/.exec(tf);
  if (!m) throw new Error(`bad timeframe ${tf}`);
  return Number(m[1]) * UNIT_S[m[2]];
}

function tfOffset(tf) {
  return tf.endsWith("w") ? WEEK_OFFSET_S : 0;
}

function floorBucket(tSec, tf) {
  const sec = tfSeconds(tf);
  const off = tfOffset(tf);
  return Math.floor((tSec - off) / sec) * sec + off;
}

function pairKey(exchange, symbol) {
  return `${exchange}:${symbol}`;
}

function fmtTime(us, withMs = true) {
  const d = new Date(Math.floor(us / 1000));
  const s = d.toISOString(); // 2026-07-15T12:34:56.789Z
  return withMs ? s.slice(11, 23) : s.slice(11, 19);
}

function fmtDateTime(us) {
  if (us === null || us === undefined || us === 0) return "—";
  return new Date(Math.floor(us / 1000)).toISOString().replace("T", " ").slice(0, 19);
}

function fmtAge(us) {
  if (us === null || us === undefined) return "—";
  const s = Math.max(0, (nowUs() - us) / 1e6);
  if (s < 10) return `${s.toFixed(1)} s`;
  if (s < 120) return `${Math.round(s)} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  if (s < 172800) return `${Math.round(s / 3600)} h`;
  return `${Math.round(s / 86400)} d`;
}

function fmtInt(n) {
  return n === null || n === undefined ? "—" : Number(n).toLocaleString("en-US");
}

function decimals(text) {
  const s = String(text);
  const i = s.indexOf(".");
  if (i < 0) return 0;
  return s.slice(i + 1).replace(/0+$/, "").length;
}

// exact decimal a - b on strings (BigInt), e.g. ("67012.34", "67010.1") -> "+2.24"
function decParse(text) {
  const s = String(text).trim();
  const neg = s.startsWith("-");
  const body = neg || s.startsWith("+") ? s.slice(1) : s;
  const [i, f = ""] = body.split(".");
  const digits = BigInt((i || "0") + f);
  return { v: neg ? -digits : digits, scale: f.length };
}

function decSub(a, b) {
  const x = decParse(a);
  const y = decParse(b);
  const scale = Math.max(x.scale, y.scale);
  const d = x.v * 10n ** BigInt(scale - x.scale) - y.v * 10n ** BigInt(scale - y.scale);
  const neg = d < 0n;
  let s = (neg ? -d : d).toString().padStart(scale + 1, "0");
  if (scale > 0) s = `${s.slice(0, -scale)}.${s.slice(-scale)}`.replace(/\.?0+$/, "");
  return (neg ? "-" : d === 0n ? "±" : "+") + s;
}

function el(tag, attrs = {}, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null) continue;
    if (k === "class") e.className = v;
    else e.setAttribute(k, v);
  }
  if (text !== undefined) e.textContent = text;
  return e;
}

function showError(msg) {
  const e = $("error");
  if (!msg) {
    e.hidden = true;
    e.textContent = "";
    return;
  }
  e.hidden = false;
  e.textContent = msg;
  e.title = msg;
}

async function api(path, query = {}) {
  const url = new URL(path, location.origin);
  for (const [k, v] of Object.entries(query)) {
    if (v !== undefined && v !== null && v !== "") url.searchParams.set(k, String(v));
  }
  const headers = { Accept: "application/json" };
  if (API_KEY) headers["X-API-Key"] = API_KEY;
  const res = await fetch(url, { headers, cache: "no-store" });
  if (!res.ok) {
    let detail = res.statusText;
    try {
      detail = (await res.json()).error || detail;
    } catch (_) {
      /* not JSON */
    }
    const err = new Error(`${res.status} ${path}: ${detail}`);
    err.status = res.status;
    throw err;
  }
  return res.json();
}

// -- chart --------------------------------------------------------------------------------------------------

const chart = LWC.createChart($("chart"), {
  autoSize: true,
  layout: {
    background: { type: "solid", color: "#161b22" },
    textColor: "#aab4c0",
    fontSize: 11,
    attributionLogo: true, // the library's license asks for a link to TradingView
    panes: { separatorColor: "#272e38", enableResize: true },
  },
  grid: { vertLines: { color: "#1f2630" }, horzLines: { color: "#1f2630" } },
  rightPriceScale: { borderColor: "#272e38" },
  timeScale: { borderColor: "#272e38", timeVisible: true, secondsVisible: false, maxBarSpacing: 30, rightOffset: 3 },
  crosshair: { mode: LWC.CrosshairMode.Normal },
  localization: { locale: "en-US" }, // the axis shows UTC: the data are UTC seconds
});

const candleSeries = chart.addSeries(LWC.CandlestickSeries, {
  upColor: COLORS.up,
  downColor: COLORS.down,
  borderVisible: false,
  wickUpColor: COLORS.up,
  wickDownColor: COLORS.down,
  priceFormat: { type: "price", precision: 2, minMove: 0.01 },
});

// volume in its own pane below the candles
const volumeSeries = chart.addSeries(
  LWC.HistogramSeries,
  { priceFormat: { type: "volume" }, priceLineVisible: false, lastValueVisible: true },
  1,
);
try {
  chart.panes()[0].setStretchFactor(3);
  chart.panes()[1].setStretchFactor(1);
} catch (_) {
  /* older library: default pane heights */
}

function toBar(raw) {
  return {
    time: Math.floor(raw.bucket / 1e6),
    open: Number(raw.open),
    high: Number(raw.high),
    low: Number(raw.low),
    close: Number(raw.close),
  };
}

function toVolume(raw) {
  return {
    time: Math.floor(raw.bucket / 1e6),
    value: Number(raw.volume),
    color: Number(raw.close) >= Number(raw.open) ? COLORS.upVol : COLORS.downVol,
  };
}

function updatePrecision(raws) {
  let p = state.precision;
  for (const r of raws) p = Math.max(p, decimals(r.open), decimals(r.high), decimals(r.low), decimals(r.close));
  p = Math.min(p, 10);
  if (p !== state.precision) {
    state.precision = p;
    candleSeries.applyOptions({ priceFormat: { type: "price", precision: p, minMove: 10 ** -p } });
  }
}

function setAllCandles() {
  const times = [...state.candles.keys()].sort((a, b) => a - b);
  while (times.length > MAX_CANDLES) state.candles.delete(times.shift());
  const raws = times.map((t) => state.candles.get(t));
  candleSeries.setData(raws.map(toBar));
  volumeSeries.setData(raws.map(toVolume));
  state.lastTime = times.length ? times[times.length - 1] : null;
  $("chart").dataset.candles = String(times.length);
}

// merge one candle from the API or the stream; false when ours is at least as new
function upsertCandle(raw, redraw = true) {
  const t = Math.floor(raw.bucket / 1e6);
  const had = state.candles.get(t);
  if (had && Number(had.trade_count) > Number(raw.trade_count)) return false;
  state.candles.set(t, raw);
  if (!redraw) return true;
  updatePrecision([raw]);
  if (!had && state.candles.size > MAX_CANDLES + 100) {
    setAllCandles(); // drops the oldest
    if (!hovering) renderLegend(raw);
    return true;
  }
  if (state.lastTime === null || t >= state.lastTime) {
    candleSeries.update(toBar(raw));
    volumeSeries.update(toVolume(raw));
    state.lastTime = t;
    $("chart").dataset.candles = String(state.candles.size);
  } else {
    candleSeries.update(toBar(raw), true); // an older bucket (a late trade): historical update
    volumeSeries.update(toVolume(raw), true);
  }
  if (!hovering) renderLegend(raw);
  return true;
}

let hovering = false;

function renderLegend(raw) {
  const legend = $("legend");
  legend.textContent = "";
  if (!raw) {
    legend.title = "";
    legend.textContent = "no candles in this range yet";
    return;
  }
  legend.title = `${fmtDateTime(raw.bucket)} UTC  open ${raw.open}  high ${raw.high}  low ${raw.low}  close ${raw.close}  volume ${raw.volume}  quote volume ${raw.quote_volume}  vwap ${raw.vwap}  trades ${raw.trade_count}`;
  const up = Number(raw.close) >= Number(raw.open);
  const cls = up ? "up" : "down";
  const parts = [
    ["", fmtDateTime(raw.bucket).slice(0, 16)],
    ["O", raw.open],
    ["H", raw.high],
    ["L", raw.low],
    ["C", raw.close],
    ["V", raw.volume],
    ["VWAP", raw.vwap],
    ["n", String(raw.trade_count)],
  ];
  for (const [k, v] of parts) {
    if (k) legend.append(`${k} `);
    legend.append(el("b", { class: k === "V" || k === "n" || k === "" ? "" : cls }, v ?? "—"), "  ");
  }
}

chart.subscribeCrosshairMove((param) => {
  const raw = param && param.time !== undefined ? state.candles.get(param.time) : undefined;
  hovering = Boolean(raw);
  renderLegend(raw || (state.lastTime !== null ? state.candles.get(state.lastTime) : null));
});

function candleRange(tf) {
  const sec = tfSeconds(tf);
  const cur = floorBucket(Math.floor(nowUs() / 1e6), tf);
  return { start: (cur - (N_BUCKETS - 1) * sec) * 1e6, end: (cur + sec) * 1e6 };
}

async function loadCandles(gen) {
  const { exchange, symbol } = state.sel;
  const tf = state.tf;
  const range = candleRange(tf);
  const body = await api(`/v1/ohlcv/${tf}`, { exchange, symbol, start: range.start, end: range.end });
  if (gen !== state.gen) return;
  state.range = range;
  // merge what the stream may already have delivered for this selection
  for (const raw of body.candles) upsertCandle(raw, false);
  updatePrecision(body.candles);
  setAllCandles();
  const n = state.candles.size;
  if (n > 0 && n < 150) chart.timeScale().fitContent();
  else if (n > 0) chart.timeScale().setVisibleLogicalRange({ from: n - 150, to: n + 3 });
  renderLegend(state.lastTime !== null ? state.candles.get(state.lastTime) : null);
}

// fetch the candles from the newest one we hold (it may still be open) to now
async function catchUpCandles(gen) {
  const { exchange, symbol } = state.sel;
  const tf = state.tf;
  const sec = tfSeconds(tf);
  const cur = floorBucket(Math.floor(nowUs() / 1e6), tf);
  let from = state.lastTime !== null ? state.lastTime : cur - sec;
  from = Math.max(from, cur - (N_BUCKETS - 1) * sec);
  const body = await api(`/v1/ohlcv/${tf}`, { exchange, symbol, start: from * 1e6, end: (cur + sec) * 1e6 });
  if (gen !== state.gen) return;
  for (const raw of body.candles) upsertCandle(raw);
}

// -- tape -----------------------------------------------------------------------------------------------------

function tradeKey(t) {
  return `${t.exchange}|${t.trade_id}`;
}

function cmpTradeDesc(a, b) {
  return b.ts - a.ts || (a.exchange < b.exchange ? 1 : a.exchange > b.exchange ? -1 : 0) || b.trade_id - a.trade_id;
}

function addToTape(trades, fresh) {
  const { exchange, symbol } = state.sel;
  let changed = false;
  for (const t of trades) {
    if (t.exchange !== exchange || t.symbol !== symbol) continue;
    const key = tradeKey(t);
    if (state.tapeKeys.has(key)) continue;
    state.tape.push(t);
    state.tapeKeys.add(key);
    if (fresh) state.freshKeys.add(key);
    changed = true;
  }
  if (!changed) return;
  state.tape.sort(cmpTradeDesc);
  if (state.tape.length > TAPE_MAX) {
    for (const t of state.tape.splice(TAPE_MAX)) {
      state.tapeKeys.delete(tradeKey(t));
      state.freshKeys.delete(tradeKey(t));
    }
  }
  queueRender("tape");
}

function renderTape() {
  const tbody = $("tape").tBodies[0];
  const rows = state.tape.map((t) => {
    const key = tradeKey(t);
    const tr = el("tr", {
      "data-trade-id": String(t.trade_id),
      "data-exchange": t.exchange,
      class: state.freshKeys.has(key) ? "fresh" : null,
    });
    tr.append(
      el("td", {}, fmtTime(t.ts)),
      el("td", {}, t.exchange),
      el("td", {}, t.symbol),
      el("td", { class: t.side === "buy" ? "buy" : t.side === "sell" ? "sell" : "" }, t.side || "—"),
      el("td", { class: `num ${t.side === "buy" ? "buy" : t.side === "sell" ? "sell" : ""}` }, t.price),
      el("td", { class: "num" }, t.qty),
    );
    return tr;
  });
  state.freshKeys.clear();
  tbody.replaceChildren(...rows);
  $("tape-count").textContent = `${state.tape.length} newest, live`;
}

// the newest `n` trades of a pair: widen the window until it holds n trades (ascending pages, keep the tail)
async function fetchLatestTrades(exchange, symbol, n, gen) {
  const windowsS = [10, 60, 600, 3600];
  let got = [];
  for (const w of windowsS) {
    got = [];
    let cursor = null;
    for (let page = 0; page < 10; page++) {
      const body = await api("/v1/trades", { exchange, symbol, start: nowUs() - w * 1e6, limit: 1000, cursor });
      if (gen !== state.gen) return [];
      got = got.concat(body.trades).slice(-n);
      cursor = body.next_cursor;
      if (!cursor) break;
    }
    if (got.length >= n) break;
  }
  return got;
}

async function loadTape(gen) {
  const { exchange, symbol } = state.sel;
  const trades = await fetchLatestTrades(exchange, symbol, TAPE_MAX, gen);
  if (gen !== state.gen) return;
  addToTape(trades, false);
}

async function catchUpTape(gen) {
  const { exchange, symbol } = state.sel;
  const newest = state.tape.length ? state.tape[0].ts : nowUs() - 60e6;
  let cursor = null;
  for (let page = 0; page < 5; page++) {
    const body = await api("/v1/trades", { exchange, symbol, start: newest, limit: 1000, cursor });
    if (gen !== state.gen) return;
    addToTape(body.trades, true);
    cursor = body.next_cursor;
    if (!cursor) break;
  }
}

// -- cross-exchange comparison ----------------------------------------------------------------------------------

function comparePairs(sel) {
  const out = [{ exchange: sel.exchange, symbol: sel.symbol, quote: sel.quote }];
  const prefer = [sel.quote, "USD", "USDT", "USDC"];
  for (const ex of EXCHANGE_ORDER.concat(
    [...new Set(state.symbols.map((s) => s.exchange))].filter((e) => !EXCHANGE_ORDER.includes(e)),
  )) {
    if (ex === sel.exchange) continue;
    const cands = state.symbols.filter((s) => s.exchange === ex && s.base === sel.base);
    if (!cands.length) continue;
    cands.sort((a, b) => {
      const ra = prefer.indexOf(a.quote) < 0 ? 99 : prefer.indexOf(a.quote);
      const rb = prefer.indexOf(b.quote) < 0 ? 99 : prefer.indexOf(b.quote);
      return ra - rb;
    });
    out.push({ exchange: ex, symbol: cands[0].symbol, quote: cands[0].quote });
  }
  return out.map((p) => ({ ...p, price: null, ts: null, source: null }));
}

function comparePrice(exchange, symbol, price, ts, source) {
  const row = state.compare.find((r) => r.exchange === exchange && r.symbol === symbol);
  if (!row) return;
  if (row.ts !== null && ts < row.ts) return;
  row.price = price;
  row.ts = ts;
  row.source = source;
  queueRender("compare");
}

function renderCompare() {
  const tbody = $("compare").tBodies[0];
  const ref = state.compare[0];
  const rows = state.compare.map((r, i) => {
    const tr = el("tr", { "data-exchange": r.exchange, "data-symbol": r.symbol });
    let spread = "—";
    let bps = "—";
    let cls = "";
    if (i === 0) {
      spread = "ref";
      bps = "ref";
      cls = "ref";
    } else if (r.price !== null && ref.price !== null) {
      spread = decSub(r.price, ref.price);
      let b = (Number(r.price) / Number(ref.price) - 1) * 1e4;
      if (Math.abs(b) < 0.005) b = 0; // no "-0.00"
      bps = `${b > 0 ? "+" : b < 0 ? "" : "±"}${b.toFixed(2)}`;
      cls = b > 0 ? "up" : b < 0 ? "down" : "";
    }
    tr.append(
      el("td", {}, r.exchange),
      el("td", { title: r.source === "candle" ? "last 1m candle close (no trade streamed yet)" : "last trade" }, r.symbol),
      el("td", { class: "num", "data-testid": "compare-price" }, r.price ?? "—"),
      el("td", { class: `num ${cls}` }, spread),
      el("td", { class: `num ${cls}` }, bps),
      el("td", { class: "num" }, r.source === "candle" ? `≤ ${fmtAge(r.ts)}` : fmtAge(r.ts)),
    );
    return tr;
  });
  tbody.replaceChildren(...rows);
  const quotes = new Set(state.compare.map((r) => r.quote));
  $("compare-base").textContent = state.sel
    ? `${state.sel.base}${quotes.size > 1 ? ` (quotes differ: ${[...quotes].join(" vs ")})` : ""}`
    : "";
}

// initial prices: the close of the newest 1m candle in the last 2 hours (the last trade of that minute)
async function loadCompare(gen) {
  await Promise.all(
    state.compare.map(async (r) => {
      const now = nowUs();
      const body = await api("/v1/ohlcv/1m", { exchange: r.exchange, symbol: r.symbol, start: now - 7200e6, end: now + 60e6 });
      if (gen !== state.gen || !body.candles.length) return;
      const last = body.candles[body.candles.length - 1];
      comparePrice(r.exchange, r.symbol, last.close, last.bucket, "candle");
    }),
  );
}

// -- pipeline -------------------------------------------------------------------------------------------------

function kv(dl, title, items) {
  dl.replaceChildren(el("dt", { class: "title" }, title));
  for (const [k, v, bad] of items) {
    dl.append(el("dt", {}, k), el("dd", { class: bad ? "bad" : "" }, v));
  }
}

function renderStatus(s) {
  $("mode").textContent = s.mode === "up" ? "k2 up: live feeds" : s.mode === "serve" ? "k2 serve: no feeds" : s.mode || "";
  const tbody = $("feeds").tBodies[0];
  const feeds = s.feeds || [];
  if (!feeds.length) {
    tbody.replaceChildren(el("tr", {}, null));
    tbody.firstChild.append(el("td", { colspan: "7", class: "muted" }, "no feeds in this process"));
  } else {
    tbody.replaceChildren(
      ...feeds.map((f) => {
        const g = f.gaps || {};
        const st = String(f.state || "unknown");
        const known = ["live", "starting", "connecting", "subscribing", "backoff", "stopped"].includes(st);
        const tr = el("tr", { "data-testid": `feed-${f.exchange}`, "data-state": st });
        const stateCell = el("td");
        stateCell.append(el("span", { class: `state state-${known ? st : "unknown"}`, title: f.last_error || "" }, st));
        tr.append(
          el("td", {}, f.exchange),
          stateCell,
          el("td", { class: "num" }, f.lag_ms === null || f.lag_ms === undefined ? "—" : Number(f.lag_ms).toFixed(1)),
          el("td", { class: "num" }, fmtAge(f.last_trade)),
          el("td", { class: "num" }, fmtInt(f.trades)),
          el("td", { class: `num ${f.reconnects ? "down" : ""}` }, fmtInt(f.reconnects)),
          el("td", { class: `num ${g.unfilled ? "down" : ""}` }, `${g.detected ?? 0}/${g.filled ?? 0}/${g.unfilled ?? 0}/${g.pending ?? 0}`),
        );
        return tr;
      }),
    );
  }
  const w = s.writer || {};
  const gaps = s.gaps || {};
  kv($("writer"), "writer", [
    ["trades stored", fmtInt(w.trades_stored)],
    ["duplicates", fmtInt(w.duplicates)],
    ["dead letters", fmtInt(w.dead_letters), w.dead_letters > 0],
    ["inserts", fmtInt(w.inserts)],
    ["gaps pending/filled/partial/unfilled", `${gaps.pending ?? 0}/${gaps.filled ?? 0}/${gaps.partial ?? 0}/${gaps.unfilled ?? 0}`, gaps.unfilled > 0],
  ]);
  const hot = (s.tiers && s.tiers.hot) || {};
  const cold = (s.tiers && s.tiers.cold) || {};
  // docs/api.md names `last_offload` (µs); fall back to the cold snapshot time (ms) when only that is given
  const lastOffload =
    cold.last_offload !== undefined && cold.last_offload !== null
      ? cold.last_offload
      : cold.snapshot_ms !== undefined && cold.snapshot_ms !== null
        ? cold.snapshot_ms * 1000
        : null;
  kv($("tiers"), "tiers", [
    ["hot rows (trades)", fmtInt(hot.trades)],
    ["hot raw frames", fmtInt(hot.raw_frames)],
    ["cold rows (trades)", fmtInt(cold.trades)],
    ["offload watermark", fmtDateTime(cold.offload_watermark)],
    ["last offload", lastOffload === null ? "never" : `${fmtDateTime(lastOffload)} (${fmtAge(lastOffload)} ago)`],
    ["offloads / errors", `${fmtInt(cold.offloads)} / ${fmtInt(cold.offload_errors)}`, cold.offload_errors > 0],
  ]);
  $("pipeline-updated").textContent = `updated ${fmtTime(s.now || nowUs(), false)} UTC`;
}

async function pollStatus() {
  try {
    const t0 = Date.now();
    const s = await api("/v1/status");
    const t1 = Date.now();
    if (typeof s.now === "number") state.clockOffsetUs = s.now - ((t0 + t1) / 2) * 1000;
    renderStatus(s);
    $("pipeline").dataset.ok = "1";
  } catch (err) {
    $("pipeline").dataset.ok = "0";
    $("pipeline-updated").textContent = `status unavailable: ${err.message}`;
  } finally {
    setTimeout(pollStatus, STATUS_EVERY_MS);
  }
}

// -- stream -----------------------------------------------------------------------------------------------------

function setConn(conn, detail = "") {
  state.conn = conn;
  const badge = $("conn");
  badge.dataset.state = conn;
  badge.textContent = detail ? `${conn} ${detail}` : conn;
}

function connectStream() {
  const gen = ++state.wsGen;
  clearTimeout(state.wsRetryTimer);
  if (state.ws) {
    const old = state.ws;
    old.onclose = old.onmessage = old.onerror = old.onopen = null;
    try {
      old.close(1000);
    } catch (_) {
      /* already closed */
    }
  }
  state.subscribed = false;
  const selGen = state.gen;
  const url = new URL("/v1/stream", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  url.search = "";
  const symbols = state.compare.map((r) => pairKey(r.exchange, r.symbol));
  url.searchParams.set("symbols", symbols.join(","));
  if (STORED.has(state.tf)) {
    url.searchParams.set("channels", "trades,candles");
    url.searchParams.set("timeframes", state.tf);
  } else {
    url.searchParams.set("channels", "trades");
  }
  if (API_KEY) url.searchParams.set("api_key", API_KEY);
  setConn(state.conn === "reconnecting" ? "reconnecting" : "connecting");
  let ws;
  try {
    ws = new WebSocket(url);
  } catch (err) {
    scheduleReconnect(gen, `(${err.message})`);
    return;
  }
  state.ws = ws;
  ws.onmessage = (ev) => {
    if (gen !== state.wsGen) return;
    let msg;
    try {
      msg = JSON.parse(ev.data);
    } catch (_) {
      return;
    }
    onStreamMessage(msg, selGen);
  };
  ws.onclose = (ev) => {
    if (gen !== state.wsGen) return;
    state.subscribed = false;
    scheduleReconnect(gen, ev.code ? `(closed ${ev.code}${ev.reason ? `: ${ev.reason}` : ""})` : "");
  };
  ws.onerror = () => {
    /* a close event follows */
  };
}

function scheduleReconnect(gen, why) {
  const delay = state.wsBackoffMs;
  state.wsBackoffMs = Math.min(state.wsBackoffMs * 2, 15000);
  setConn("reconnecting", `in ${(delay / 1000).toFixed(1)} s ${why}`);
  state.wsRetryTimer = setTimeout(() => {
    if (gen === state.wsGen) connectStream();
  }, delay);
}

function onStreamMessage(msg, selGen) {
  if (selGen !== state.gen) return;
  switch (msg.type) {
    case "subscribed":
      state.subscribed = true;
      state.wsBackoffMs = 500;
      setConn("live");
      if (state.loadedGen === state.gen) catchUp(state.gen);
      break;
    case "trades": {
      state.messages.trades++;
      addToTape(msg.data, true);
      for (const t of msg.data) comparePrice(t.exchange, t.symbol, t.price, t.ts, "trade");
      break;
    }
    case "candles": {
      state.messages.candles++;
      if (msg.timeframe !== state.tf) break;
      for (const c of msg.data) {
        if (c.exchange === state.sel.exchange && c.symbol === state.sel.symbol) upsertCandle(c);
      }
      break;
    }
    case "error":
      state.messages.other++;
      showError(`stream: ${msg.error}`);
      break;
    default:
      state.messages.other++;
  }
}

// what a (re)subscription may have missed: candles from our newest bucket, trades from our newest trade
async function catchUp(gen) {
  try {
    await Promise.all([catchUpCandles(gen), catchUpTape(gen)]);
  } catch (err) {
    if (gen === state.gen) showError(err.message);
  }
}

// -- rendering ------------------------------------------------------------------------------------------------

function queueRender(what) {
  if (state.renderQueued.size === 0) {
    requestAnimationFrame(() => {
      const todo = state.renderQueued;
      state.renderQueued = new Set();
      if (todo.has("tape")) renderTape();
      if (todo.has("compare")) renderCompare();
    });
  }
  state.renderQueued.add(what);
}

// background tabs get no animation frames: still render the tape and comparison every second
setInterval(() => {
  if (document.hidden && state.renderQueued.size) {
    const todo = state.renderQueued;
    state.renderQueued = new Set();
    if (todo.has("tape")) renderTape();
    if (todo.has("compare")) renderCompare();
  }
}, 1000);

// ages in the comparison panel move with the clock
setInterval(() => queueRender("compare"), 1000);

// -- selection ------------------------------------------------------------------------------------------------

function fillSymbolSelect() {
  const select = $("symbol");
  select.replaceChildren();
  const exchanges = [...new Set(state.symbols.map((s) => s.exchange))].sort(
    (a, b) => (EXCHANGE_ORDER.indexOf(a) + 1 || 99) - (EXCHANGE_ORDER.indexOf(b) + 1 || 99),
  );
  for (const ex of exchanges) {
    const group = el("optgroup", { label: ex });
    for (const s of state.symbols.filter((x) => x.exchange === ex)) {
      group.append(el("option", { value: pairKey(s.exchange, s.symbol) }, `${s.symbol} (${ex})`));
    }
    select.append(group);
  }
}

function syncUrl() {
  const p = new URLSearchParams(location.search);
  p.set("symbol", pairKey(state.sel.exchange, state.sel.symbol));
  p.set("tf", state.tf);
  history.replaceState(null, "", `${location.pathname}?${p.toString()}`);
}

async function select(key, tf) {
  const sel = state.symbols.find((s) => pairKey(s.exchange, s.symbol) === key);
  if (!sel) throw new Error(`unknown symbol ${key}`);
  const gen = ++state.gen;
  state.sel = sel;
  state.tf = tf;
  $("symbol").value = key;
  $("timeframe").value = tf;
  syncUrl();
  showError("");
  // reset every panel for the new selection
  state.candles = new Map();
  state.lastTime = null;
  state.range = null;
  state.precision = 2;
  candleSeries.applyOptions({ priceFormat: { type: "price", precision: 2, minMove: 0.01 } });
  candleSeries.setData([]);
  volumeSeries.setData([]);
  $("chart").dataset.candles = "0";
  $("chart-title").textContent = `${sel.exchange} ${sel.symbol} · ${tf}${STORED.has(tf) ? "" : " (rolled up)"}`;
  state.tape = [];
  state.tapeKeys = new Set();
  state.freshKeys = new Set();
  $("tape-title").textContent = `${sel.exchange} ${sel.symbol}`;
  state.compare = comparePairs(sel);
  queueRender("tape");
  queueRender("compare");
  renderLegend(null);
  clearInterval(state.rollupTimer);
  state.rollupTimer = null;

  connectStream(); // subscribe first: the fetches below and the stream merge (see the top of this file)
  try {
    await Promise.all([loadCandles(gen), loadTape(gen), loadCompare(gen)]);
  } catch (err) {
    if (gen === state.gen) showError(err.message);
  }
  if (gen !== state.gen) return;
  state.loadedGen = gen;
  if (state.subscribed) catchUp(gen); // the stream answered before the fetches finished
  if (!STORED.has(tf)) {
    state.rollupTimer = setInterval(() => {
      if (gen === state.gen) catchUpCandles(gen).catch((err) => showError(err.message));
    }, ROLLUP_EVERY_MS);
  }
}

async function start() {
  pollStatus();
  let body;
  for (let attempt = 0; ; attempt++) {
    try {
      body = await api("/v1/symbols");
      break;
    } catch (err) {
      showError(`${err.message} (retrying)`);
      await new Promise((r) => setTimeout(r, Math.min(1000 * 2 ** attempt, 10000)));
    }
  }
  showError("");
  state.symbols = body.symbols;
  fillSymbolSelect();
  const keys = state.symbols.map((s) => pairKey(s.exchange, s.symbol));
  const wanted = params.get("symbol");
  const firstBinance = state.symbols.find((s) => s.exchange === "binance");
  const key = wanted && keys.includes(wanted)
    ? wanted
    : firstBinance
      ? pairKey(firstBinance.exchange, firstBinance.symbol)
      : keys[0];
  let tf = params.get("tf") || "1m";
  if (![...$("timeframe").options].some((o) => o.value === tf)) {
    if (/^\d+[mhdw]$/.test(tf)) $("timeframe").append(el("option", { value: tf }, tf));
    else tf = "1m";
  }
  $("symbol").addEventListener("change", (e) => select(e.target.value, state.tf));
  $("timeframe").addEventListener("change", (e) => select(pairKey(state.sel.exchange, state.sel.symbol), e.target.value));
  if (key) await select(key, tf);
}

// -- what the browser test reads --------------------------------------------------------------------------------

window.k2dash = {
  // the candles the chart holds (its own series data), with the exact strings they were drawn from
  candles: () =>
    candleSeries.data().map((b) => {
      const raw = state.candles.get(b.time) || {};
      return {
        time: b.time,
        bucket: b.time * 1e6,
        open: b.open,
        high: b.high,
        low: b.low,
        close: b.close,
        raw: { ...raw },
      };
    }),
  tape: () => state.tape.map((t) => ({ ...t })),
  compare: () => state.compare.map((r) => ({ ...r })),
  state: () => ({
    exchange: state.sel && state.sel.exchange,
    symbol: state.sel && state.sel.symbol,
    timeframe: state.tf,
    range: state.range,
    loaded: state.loadedGen === state.gen && state.gen > 0,
    conn: state.conn,
    subscribed: state.subscribed,
    messages: { ...state.messages },
  }),
  select: (key, tf) => select(key, tf || state.tf),
};

start();
