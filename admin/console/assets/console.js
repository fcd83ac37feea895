// esraft console: the pages' behaviour, written for this console, no
// library. Every figure comes from the admin JSON API (/admin/...); text
// from the cluster is put in the page as text nodes, never as markup.
'use strict';

(function () {
  const main = document.getElementById('main');
  const page = main.dataset.page;
  const name = main.dataset.name;
  const csrf = document.querySelector('meta[name="csrf-token"]').content;

  // el builds an element: attributes (on* are listeners) and children
  // (strings become text nodes).
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else if (k === 'class') e.className = v;
      else e.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children.flat(Infinity)) {
      if (c === undefined || c === null || c === false) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  // render puts nodes in parent unless they would show just what it shows
  // already: a page refreshed every few seconds keeps its elements, so
  // keyboard focus stays where it was and a button is not swapped under
  // the pointer.
  const shown = new WeakMap();
  function render(parent, nodes) {
    const html = nodes.map((n) => n.outerHTML).join('');
    if (shown.get(parent) === html) return;
    shown.set(parent, html);
    parent.replaceChildren(...nodes);
  }

  function fill(tbody, rows, empty, cols) {
    render(tbody, rows.length ? rows : [el('tr', {}, el('td', { colspan: cols }, empty))]);
  }

  const num = (n) => Number(n).toLocaleString('en-US');
  const when = (t) => (t ? new Date(t).toISOString().replace('T', ' ').replace('Z', ' UTC') : '');
  const enc = encodeURIComponent;

  // APIError carries the API's {"error", "code"} answer.
  class APIError extends Error {
    constructor(status, body) {
      super((body && body.error) || 'HTTP ' + status);
      this.status = status;
      this.body = body || {};
    }
  }

  async function api(method, path, body) {
    const opt = { method, credentials: 'same-origin', headers: { Accept: 'application/json' } };
    if (method !== 'GET') opt.headers['X-CSRF-Token'] = csrf;
    if (body !== undefined) {
      opt.headers['Content-Type'] = 'application/json';
      opt.body = JSON.stringify(body);
    }
    const r = await fetch(path, opt);
    let data = null;
    try {
      data = await r.json();
    } catch (e) {
      data = null;
    }
    if (r.status === 401) {
      location.assign('/ui/login?next=' + enc(location.pathname + location.search));
    }
    if (!r.ok) throw new APIError(r.status, data);
    return data;
  }

  const message = document.getElementById('message');
  const errorBox = document.getElementById('error');
  function say(text) {
    message.textContent = text;
    errorBox.hidden = true;
  }
  function fail(err, what) {
    let text = (what ? what + ': ' : '') + err.message;
    if (err.body && err.body.members && err.body.members.length) text += '\nLive members: ' + err.body.members.join(', ');
    errorBox.textContent = text;
    errorBox.dataset.source = 'action';
    errorBox.hidden = false;
    message.textContent = '';
  }

  // get reads path from the API; on failure it shows why (what failed)
  // and returns null. A failed read's error goes once a read succeeds
  // again; an action's stays until the next action.
  async function get(path, what) {
    try {
      const out = await api('GET', path);
      if (errorBox.dataset.source === 'read') errorBox.hidden = true;
      return out;
    } catch (e) {
      fail(e, what);
      errorBox.dataset.source = 'read';
      return null;
    }
  }

  // confirmAction asks before a change, in the page's own dialog, and
  // resolves to whether the operator confirmed.
  const dialog = document.getElementById('confirm');
  function confirmAction(text, okLabel) {
    document.getElementById('confirm-text').textContent = text;
    document.getElementById('confirm-ok').textContent = okLabel || 'Confirm';
    return new Promise((resolve) => {
      dialog.addEventListener('close', () => resolve(dialog.returnValue === 'ok'), { once: true });
      dialog.returnValue = '';
      dialog.showModal();
      document.getElementById('confirm-cancel').focus();
    });
  }

  // act confirms, calls the API, reports, and refreshes.
  async function act(question, okLabel, method, path, body, done, refresh) {
    if (!(await confirmAction(question, okLabel))) return;
    try {
      const out = await api(method, path, body);
      say(done(out));
    } catch (e) {
      fail(e, 'Refused');
    }
    if (refresh) await refresh();
  }

  // every runs fn now and then every ms while the page is open; a call
  // still running is not started again.
  function every(ms, fn) {
    let busy = false;
    const tick = async () => {
      if (busy) return;
      busy = true;
      try {
        await fn();
      } catch (e) {
        fail(e, 'Refreshing the page');
      } finally {
        busy = false;
      }
    };
    tick();
    setInterval(tick, ms);
    return tick;
  }

  // ---- cluster ----------------------------------------------------------
  function cluster() {
    const load = async () => {
      const st = await get('/admin/status', 'Cluster status');
      if (!st) return;
      fill(document.querySelector('#nodes tbody'), st.nodes.map((n) =>
        el('tr', { 'data-node': n.id },
          el('th', { scope: 'row' }, n.id, n.id === st.node ? ' (this node)' : ''),
          el('td', {}, el('code', {}, n.addr)),
          el('td', {}, n.role),
          el('td', { class: n.reachable ? 'ok' : 'bad' }, n.reachable ? 'reachable' : 'unreachable' + (n.error ? ': ' + n.error : '')),
          el('td', {}, n.leads.length ? n.leads.join(', ') : '–'))), 'No members', 5);
      fill(document.querySelector('#shards tbody'), st.shards.map((s) => {
        const here = s.leader === st.node;
        return el('tr', { 'data-shard': s.shard },
          el('th', { scope: 'row' }, s.shard),
          el('td', { class: 'leader' + (s.leader ? '' : ' bad') }, s.leader || 'no leader'),
          el('td', { class: 'num' }, num(s.term)),
          el('td', { class: 'num' }, num(s.commit_index)),
          el('td', { class: 'num' }, num(s.applied_index)),
          el('td', {}, el('ul', { class: 'replicas' }, s.replicas.map((r) => el('li', { class: r.behind > 0 ? 'warn' : '' },
            r.node + ': applied ' + num(r.applied_index) + ', ' + num(r.behind) + ' behind')))),
          el('td', {}, el('button', {
            type: 'button', class: 'transfer', disabled: !here,
            title: here ? 'hand leadership of shard ' + s.shard + ' to another voter' : 'open the console of ' + (s.leader || 'the leader') + ' to transfer',
            onclick: () => act('Hand leadership of shard ' + s.shard + ' from ' + st.node + ' to another voter?', 'Transfer',
              'POST', '/admin/cluster/shards/' + s.shard + '/transfer', {},
              (o) => 'Shard ' + o.shard + ': leadership handed from ' + o.from + (o.leader ? ' to ' + o.leader : ''), load),
          }, 'Transfer leadership')));
      }), 'No shards', 7);
    };
    every(3000, load);
    document.getElementById('rebalance').addEventListener('click', () =>
      act('Make this node hand shard leaderships to voters that lead fewer?', 'Rebalance', 'POST', '/admin/cluster/rebalance', undefined,
        (o) => o.moved + ' leadership(s) moved from ' + o.node, load));
  }

  // ---- streams ----------------------------------------------------------
  async function streams() {
    const q = new URLSearchParams(location.search);
    const mode = q.get('mode') === 'category' ? 'category' : 'prefix';
    const text = q.get('q') || '';
    const after = q.get('after') || '';
    document.getElementById('mode').value = mode;
    document.getElementById('q').value = text;
    const params = new URLSearchParams({ limit: '50' });
    if (text) params.set(mode, text);
    if (after) params.set('after', after);
    const tbody = document.querySelector('#streams tbody');
    const list = await get('/admin/streams?' + params, 'Streams');
    if (!list) {
      fill(tbody, [], 'No streams', 4);
      return;
    }
    fill(tbody, list.streams.map((s) => el('tr', {},
      el('th', { scope: 'row' }, el('a', { href: '/ui/streams/' + enc(s.stream) }, s.stream)),
      el('td', { class: 'num' }, s.partition),
      el('td', { class: 'num' }, num(s.version)),
      el('td', {}, s.deleted ? 'deleted' : ''))), text ? 'No stream matches' : 'No streams yet', 4);
    const next = document.getElementById('next-page');
    if (list.next) {
      const np = new URLSearchParams({ mode, q: text, after: list.next });
      next.href = '/ui/streams?' + np;
      next.hidden = false;
    }
    const first = document.getElementById('first-page');
    if (after) {
      first.href = '/ui/streams?' + new URLSearchParams({ mode, q: text });
      first.hidden = false;
    }
    main.dataset.renderedMs = performance.now().toFixed(1);
  }

  // ---- one stream -------------------------------------------------------
  async function stream() {
    const q = new URLSearchParams(location.search);
    const from = Number(q.get('from') || '1');
    const limit = 50;
    const box = document.getElementById('events');
    let info;
    let page;
    try {
      info = await api('GET', '/admin/streams/' + enc(name));
      page = await api('GET', '/admin/streams/' + enc(name) + '/events?' + new URLSearchParams({ from: String(from), limit: String(limit) }));
    } catch (e) {
      fail(e, 'Stream ' + name);
      return;
    }
    document.getElementById('stream-info').textContent = 'Partition ' + info.partition + ', version ' + num(info.version) +
      (info.first_version > 1 ? ', events before version ' + info.first_version + ' truncated' : '') + (info.deleted ? ', deleted' : '');
    const here = new Set(page.events.map((e) => e.id));
    const mark = (ev) => {
      for (const m of document.querySelectorAll('.event.targeted')) m.classList.remove('targeted');
      const t = document.getElementById(ev.currentTarget.getAttribute('href').slice(1));
      if (t) t.classList.add('targeted');
    };
    // An ID that names an event links to it: on this page, or found by ID.
    const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
    const idLink = (id) => (uuid.test(id) ? el('a', { href: here.has(id) ? '#event-' + id : '/ui/events/' + enc(id), onclick: here.has(id) ? mark : undefined }, el('code', {}, id))
      : el('code', {}, id));
    box.replaceChildren(...(page.events.length ? page.events.map((e) => el('article', { class: 'event', id: 'event-' + e.id, 'data-version': e.version },
      el('header', {}, el('span', { class: 'version' }, 'v' + e.version), el('span', { class: 'type' }, e.type),
        el('time', { datetime: e.time }, when(e.time))),
      el('dl', {},
        el('dt', {}, 'Event ID'), el('dd', {}, el('code', {}, e.id)),
        el('dt', {}, 'Position'), el('dd', {}, 'partition ' + e.partition + ', offset ' + num(e.offset)),
        e.correlation_id ? [el('dt', {}, 'Correlation'), el('dd', { class: 'correlation' }, idLink(e.correlation_id))] : null,
        e.causation_id ? [el('dt', {}, 'Causation'), el('dd', { class: 'causation' }, idLink(e.causation_id))] : null),
      el('h3', { class: 'visually-hidden' }, 'Data'),
      el('pre', { class: 'data', 'aria-label': 'data' }, e.data !== undefined ? JSON.stringify(e.data, null, 2) : '(binary, base64) ' + (e.data_base64 || '')),
      e.headers ? el('pre', { class: 'metadata', 'aria-label': 'metadata' }, JSON.stringify(e.headers, null, 2)) : null))
      : [el('p', {}, 'No events from version ' + from + '.')]));
    if (from > info.first_version) {
      const p = document.getElementById('prev-events');
      p.href = '?from=' + Math.max(info.first_version, from - limit);
      p.hidden = false;
    }
    if (page.events.length === limit && page.next <= info.version) {
      const n = document.getElementById('next-events');
      n.href = '?from=' + page.next;
      n.hidden = false;
    }
    // The events came after the browser looked for the URL's fragment:
    // mark and show the one it names.
    const target = location.hash && document.getElementById(decodeURIComponent(location.hash.slice(1)));
    if (target) {
      target.classList.add('targeted');
      target.tabIndex = -1;
      target.focus();
    }
    main.dataset.renderedMs = performance.now().toFixed(1);
  }

  // ---- an event by ID: found through the API, shown in its stream ---------
  async function event() {
    try {
      const e = await api('GET', '/admin/events/' + enc(name));
      location.replace('/ui/streams/' + enc(e.stream) + '?from=' + e.version + '#event-' + e.id);
    } catch (e) {
      document.getElementById('event-lookup').textContent = '';
      fail(e, 'Event ' + name);
    }
  }

  // ---- partitions and the live tail --------------------------------------
  function partitions() {
    const maxRows = 200;
    let source = null;
    let tailed = null;
    let last = null;
    let paused = false;
    const tbody = document.querySelector('#tail tbody');
    const state = document.getElementById('tail-state');
    const pause = document.getElementById('tail-pause');
    const open = (p, from) => {
      if (source) source.close();
      source = new EventSource('/admin/partitions/' + p + '/tail?from=' + from);
      state.textContent = 'live';
      source.addEventListener('event', (m) => {
        const e = JSON.parse(m.data);
        last = e.offset;
        tbody.prepend(el('tr', {},
          el('td', { class: 'num' }, e.offset),
          el('td', {}, el('a', { href: '/ui/streams/' + enc(e.stream) + '?from=' + e.version + '#event-' + e.id }, e.stream)),
          el('td', { class: 'num' }, e.version), el('td', {}, e.type), el('td', {}, when(e.time))));
        while (tbody.rows.length > maxRows) tbody.deleteRow(-1);
      });
      // The server's own "error" events carry data; a dropped connection
      // does not (the browser reconnects by itself).
      source.addEventListener('error', (m) => {
        if (m.data) {
          fail(new Error(JSON.parse(m.data).error), 'Tail');
          source.close();
          state.textContent = 'stopped';
        } else {
          state.textContent = 'reconnecting…';
        }
      });
      source.addEventListener('open', () => {
        state.textContent = 'live';
      });
    };
    const startTail = (p, head) => {
      tailed = p;
      last = null;
      paused = false;
      pause.textContent = 'Pause';
      pause.setAttribute('aria-pressed', 'false');
      tbody.replaceChildren();
      document.getElementById('tail-partition').textContent = p;
      document.getElementById('tail-section').hidden = false;
      open(p, Math.max(0, head - 20));
    };
    pause.addEventListener('click', () => {
      if (tailed === null) return;
      paused = !paused;
      pause.setAttribute('aria-pressed', String(paused));
      if (paused) {
        source.close();
        source = null;
        pause.textContent = 'Resume';
        state.textContent = 'paused at offset ' + (last === null ? '–' : last);
      } else {
        pause.textContent = 'Pause';
        open(tailed, last === null ? 0 : last + 1);
      }
    });
    window.addEventListener('pagehide', () => source && source.close());
    every(3000, async () => {
      const list = await get('/admin/partitions', 'Partitions');
      if (!list) return;
      fill(document.querySelector('#partitions tbody'), list.partitions.map((p) => el('tr', { 'data-partition': p.partition },
        el('th', { scope: 'row' }, p.partition),
        el('td', { class: 'num' }, p.shard),
        el('td', { class: 'num head' }, num(p.next_offset)),
        el('td', {}, el('button', { type: 'button', onclick: () => startTail(p.partition, p.next_offset) }, 'Tail partition ' + p.partition)))), 'No partitions', 4);
    });
  }

  // ---- parked events (groups and projections) ----------------------------
  // parkedList fills ul with the parked events of a group or projection,
  // each with retry and skip buttons.
  async function parkedList(ul, kind, owner, refresh) {
    const list = await get('/admin/' + kind + '/' + enc(owner) + '/parked', 'Parked events of ' + owner);
    if (!list) return;
    const base = (p) => '/admin/' + kind + '/' + enc(owner) + '/parked/' + p.partition + '/' + p.offset;
    render(ul, (list.parked.length ? list.parked.map((p) => el('li', { 'data-partition': p.partition, 'data-offset': p.offset },
      el('div', {}, el('strong', {}, 'partition ' + p.partition + ', offset ' + p.offset), ' · stream ',
        el('a', { href: '/ui/streams/' + enc(p.stream) }, p.stream), ' · ' + p.attempts + ' attempt(s)', p.retrying ? ' · retry requested' : ''),
      el('div', { class: 'err' }, p.error),
      el('div', { class: 'buttons' },
        el('button', { type: 'button', class: 'retry', onclick: () => act('Handle the event at partition ' + p.partition + ', offset ' + p.offset + ' of ' + owner + ' again?', 'Retry',
          'POST', base(p) + '/retry', undefined, (o) => 'Retried partition ' + o.partition + ' offset ' + o.offset + (o.remaining !== undefined ? '; ' + o.remaining + ' still parked' : ''), refresh) }, 'Retry'),
        el('button', { type: 'button', class: 'skip danger', onclick: () => act('Skip the event at partition ' + p.partition + ', offset ' + p.offset + ' for good? ' + owner + ' will never handle it.', 'Skip',
          'POST', base(p) + '/skip', undefined, (o) => 'Skipped partition ' + o.partition + ' offset ' + o.offset, refresh) }, 'Skip'))))
      : [el('li', { class: 'none' }, 'No parked events.')]));
    ul.dataset.count = String(list.parked.length);
  }

  // ---- consumer groups ----------------------------------------------------
  async function groups() {
    const list = await get('/admin/groups', 'Consumer groups');
    if (!list) return;
    fill(document.querySelector('#groups tbody'), list.groups.map((g) => el('tr', {},
      el('th', { scope: 'row' }, el('a', { href: '/ui/groups/' + enc(g.group) }, g.group)),
      el('td', { class: 'num' }, g.generation), el('td', { class: 'num' }, g.members),
      el('td', { class: 'num' }, num(g.lag)), el('td', { class: 'num' }, g.parked))), 'No consumer groups', 5);
  }

  // lagChart draws samples [{t, total, parts}] as an SVG line chart, its
  // time axis from the first sample (at least a minute ago, at most
  // windowMs) to now, drawn at the box's own width so text is not
  // stretched.
  const svgNS = 'http://www.w3.org/2000/svg';
  function svg(tag, attrs, ...children) {
    const e = document.createElementNS(svgNS, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
    for (const c of children) e.append(c);
    return e;
  }
  function ago(ms) {
    return ms >= 120000 ? Math.round(ms / 60000) + ' min ago' : Math.round(ms / 1000) + ' s ago';
  }
  function lagChart(box, samples, windowMs) {
    const W = Math.max(240, box.clientWidth - 10);
    const H = 180;
    const L = 56;
    const B = 20;
    const now = Date.now();
    const span = Math.min(windowMs, Math.max(60000, samples.length ? now - samples[0].t : 0));
    const max = Math.max(1, ...samples.map((s) => s.total));
    const x = (t) => L + ((t - (now - span)) / span) * (W - L - 8);
    const y = (v) => 8 + (1 - v / max) * (H - B - 8);
    const line = (vals, cls) => svg('polyline', { class: cls, points: samples.map((s, i) => x(s.t).toFixed(1) + ',' + y(vals[i]).toFixed(1)).join(' ') });
    const parts = samples.length ? samples[samples.length - 1].parts.length : 0;
    const kids = [
      svg('line', { class: 'axis', x1: L, y1: 8, x2: L, y2: H - B }),
      svg('line', { class: 'axis', x1: L, y1: H - B, x2: W - 8, y2: H - B }),
      svg('text', { x: L - 6, y: 16, 'text-anchor': 'end' }, num(max)),
      svg('text', { x: L - 6, y: H - B, 'text-anchor': 'end' }, '0'),
      svg('text', { x: L, y: H - 4 }, ago(span)),
      svg('text', { x: W - 8, y: H - 4, 'text-anchor': 'end' }, 'now'),
    ];
    for (let p = 0; p < parts; p++) kids.push(line(samples.map((s) => s.parts[p] || 0), 'part'));
    kids.push(line(samples.map((s) => s.total), 'total'));
    const last = samples.length ? samples[samples.length - 1].total : 0;
    const title = svg('title', {}, 'Lag of the group since ' + ago(span) + '; now ' + last);
    box.replaceChildren(svg('svg', { width: W, height: H, viewBox: '0 0 ' + W + ' ' + H, role: 'img', 'data-samples': samples.length, 'data-last': last, 'data-peak': Math.max(0, ...samples.map((s) => s.total)) }, title, ...kids));
  }

  function group() {
    const windowMs = 5 * 60 * 1000;
    const samples = [];
    const path = '/admin/groups/' + enc(name);
    const parked = document.getElementById('parked');
    const load = async () => {
      const g = await get(path, 'Consumer group ' + name);
      if (!g) return;
      document.getElementById('group-generation').textContent = g.generation;
      document.getElementById('group-lag').textContent = num(g.lag);
      document.getElementById('group-parked').textContent = g.parked;
      samples.push({ t: Date.now(), total: g.lag, parts: g.partitions.map((p) => p.lag) });
      while (samples.length && samples[0].t < Date.now() - windowMs) samples.shift();
      lagChart(document.getElementById('lag-chart'), samples, windowMs);
      fill(document.querySelector('#members tbody'), g.members.map((m) => el('tr', {},
        el('th', { scope: 'row' }, m.id), el('td', {}, m.partitions.join(', ') || '–'),
        el('td', {}, when(m.last_seen)), el('td', { class: 'num' }, m.session_timeout_ms + ' ms'))), 'No live members', 4);
      fill(document.querySelector('#group-partitions tbody'), g.partitions.map((p) => el('tr', { 'data-partition': p.partition },
        el('th', { scope: 'row' }, p.partition), el('td', {}, p.owner || '–', p.next ? ' → ' + p.next : ''),
        el('td', { class: 'num' }, p.generation), el('td', { class: 'num committed' }, num(p.committed)),
        el('td', { class: 'num head' }, num(p.head)), el('td', { class: 'num lag' }, num(p.lag)),
        el('td', { class: 'num' }, p.parked))), 'No partitions', 7);
      await parkedList(parked, 'groups', name, load);
    };
    every(2000, load);
    document.getElementById('reset-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const to = document.getElementById('reset-to').value;
      act('Move every committed offset of ' + name + ' to ' + to + '? Its members will ' + (to === 'earliest' ? 'handle every event again.' : 'skip every event not yet handled.'),
        'Reset', 'POST', path + '/reset', { to }, (o) => 'Reset ' + o.group + ' to ' + to + '; lag now ' + num(o.lag), load);
    });
    document.getElementById('delete-group').addEventListener('click', async () => {
      if (!(await confirmAction('Delete consumer group ' + name + ' with its committed offsets and parked events?', 'Delete'))) return;
      try {
        await api('DELETE', path);
        location.assign('/ui/groups');
      } catch (e) {
        fail(e, 'Refused');
      }
    });
  }

  // ---- projections ----------------------------------------------------------
  function projections() {
    const box = document.getElementById('projections');
    const cards = new Map();
    const started = new Set(); // rebuilds started from this page
    const card = (p) => {
      if (cards.has(p.name)) return cards.get(p.name);
      const c = {
        state: el('span', { class: 'state' }), lag: el('span', { class: 'lag' }), parked: el('span', {}),
        progress: el('progress', { max: '100', value: '0', 'aria-label': 'rebuild of ' + p.name }),
        pct: el('span', { class: 'pct' }), list: el('ul', { class: 'parked' }),
      };
      c.bar = el('div', { class: 'rebuild', hidden: true }, c.progress, c.pct);
      c.button = el('button', { type: 'button', class: 'rebuild-button', onclick: () => act('Rebuild ' + p.name + ' on this node? Its read model is replayed from the log into a new copy, swapped in when it has caught up; reads go on meanwhile.',
        'Rebuild', 'POST', '/admin/projections/' + enc(p.name) + '/rebuild', undefined, (o) => {
          started.add(p.name);
          return 'Rebuild of ' + o.name + ' started';
        }, load) }, 'Rebuild');
      c.root = el('section', { class: 'projection', id: 'projection-' + p.name, 'aria-labelledby': 'projection-h-' + p.name },
        el('h2', { id: 'projection-h-' + p.name }, p.name),
        el('dl', { class: 'summary' }, el('dt', {}, 'State'), el('dd', {}, c.state), el('dt', {}, 'Lag'), el('dd', {}, c.lag),
          el('dt', {}, 'Parked'), el('dd', {}, c.parked)),
        c.button, c.bar, el('h3', {}, 'Parked events'), c.list);
      c.list.id = 'parked-' + p.name;
      cards.set(p.name, c);
      return c;
    };
    const setBar = (c, pct, text) => {
      c.bar.hidden = false;
      c.progress.value = pct;
      c.pct.textContent = text;
    };
    const load = async () => {
      const list = await get('/admin/projections', 'Projections');
      if (!list) return;
      if (!list.projections.length) {
        box.replaceChildren(el('p', {}, 'No local projections on this node.'));
        return;
      }
      const roots = list.projections.map((p) => card(p).root);
      if (roots.some((r, i) => box.children[i] !== r) || box.children.length !== roots.length) box.replaceChildren(...roots);
      for (const p of list.projections) {
        const c = card(p);
        c.state.textContent = p.state;
        c.state.className = 'state ' + (p.state.startsWith('failed') ? 'bad' : '');
        c.lag.textContent = num(p.lag);
        c.parked.textContent = p.parked;
        c.button.disabled = !!p.rebuild;
        if (p.rebuild) {
          const pct = Math.floor(p.rebuild.percent);
          setBar(c, pct, pct + ' % · ' + num(p.rebuild.replayed) + ' of ' + num(p.rebuild.total) +
            (p.rebuild.eta_seconds !== undefined ? ' · about ' + Math.ceil(p.rebuild.eta_seconds) + ' s left' : ''));
          started.add(p.name);
        } else if (started.has(p.name)) {
          // The rebuild this page saw has ended: swapped in, or failed.
          if (p.state.startsWith('failed')) setBar(c, c.progress.value, 'rebuild failed: ' + p.state);
          else setBar(c, 100, '100 % · rebuilt');
          started.delete(p.name);
        }
        await parkedList(c.list, 'projections', p.name, load);
      }
    };
    every(1000, load);
  }

  const pages = { cluster, streams, stream, event, partitions, groups, group, projections };
  if (pages[page]) Promise.resolve(pages[page]()).catch((e) => fail(e, 'The page failed'));
})();
