// The topology page: draws /api/topology with cytoscape (hosts as compound nodes holding their
// bridges, devices and containers; the underlay switch; veth and underlay edges), keeps it up to
// date from the /api/events stream, and shows the path between two clicked containers.
/* global cytoscape */
const cy = cytoscape({
  container: document.getElementById('graph'),
  wheelSensitivity: 0.3,
  style: [
    {
      selector: 'node',
      style: {
        label: 'data(label)',
        'font-size': 10,
        'text-wrap': 'wrap',
        'text-valign': 'center',
        width: 60,
        height: 28,
        shape: 'round-rectangle',
        'background-color': '#ddd',
        'border-width': 1,
        'border-color': '#888',
      },
    },
    {
      selector: 'node.host',
      style: {
        'text-valign': 'top',
        'background-color': '#eef3fb',
        'border-color': '#6a8cc7',
        'font-size': 12,
        'font-weight': 'bold',
      },
    },
    { selector: 'node.host.dead', style: { 'background-color': '#f6e0e0', 'border-color': '#c66' } },
    { selector: 'node.bridge', style: { 'background-color': '#cfe3c8', width: 70 } },
    {
      selector: 'node.veth',
      style: { 'background-color': '#f2f2f2', width: 70, height: 20, 'font-size': 9 },
    },
    {
      selector: 'node.vxlan, node.tun',
      style: { 'background-color': '#f7d9a8', shape: 'hexagon', width: 70 },
    },
    { selector: 'node.uplink', style: { 'background-color': '#d8d8f0' } },
    {
      selector: 'node.container',
      style: {
        'background-color': '#fff',
        'border-color': '#333',
        width: 90,
        height: 34,
        shape: 'rectangle',
      },
    },
    {
      selector: 'node.underlay',
      style: { 'background-color': '#bbb', shape: 'round-rectangle', width: 110, height: 30 },
    },
    { selector: 'node.selected', style: { 'border-width': 3, 'border-color': '#d60' } },
    {
      selector: 'node.onpath',
      style: { 'border-width': 3, 'border-color': '#d00', 'background-color': '#ffd6d6' },
    },
    { selector: 'node.host.onpath', style: { 'background-color': '#eef3fb' } },
    { selector: 'edge', style: { width: 2, 'line-color': '#999', 'curve-style': 'bezier' } },
    { selector: 'edge.underlay', style: { 'line-color': '#666', 'line-style': 'dashed' } },
    { selector: 'edge.route', style: { 'line-color': '#bbb', 'line-style': 'dotted' } },
    {
      selector: 'edge.hop',
      style: {
        width: 4,
        'line-color': '#d00',
        'target-arrow-shape': 'triangle',
        'target-arrow-color': '#d00',
        label: 'data(label)',
        'font-size': 10,
        color: '#d00',
      },
    },
  ],
});

let topo = null;
let picked = [];
let drawnKey = '';

const $ = (id) => document.getElementById(id);
const text = (s) => document.createTextNode(s);

function elementsOf(t) {
  const els = [{ data: { id: 'underlay', label: `underlay\n${t.underlay ?? ''}` }, classes: 'underlay' }];
  for (const h of t.hosts) {
    els.push({
      data: {
        id: h.id,
        label: `${h.name} ${h.publicIp}${h.subnet ? `\n${h.subnet}` : ''}${h.daemon === 'running' ? '' : ` (${h.daemon})`}`,
      },
      classes: `host ${h.daemon}`,
    });
    for (const d of h.devices) {
      const extra =
        d.kind === 'vxlan' ? `\nvni ${d.vni ?? '?'}` : d.kind === 'uplink' ? `\n${d.address ?? ''}` : '';
      els.push({ data: { id: d.id, parent: h.id, label: `${d.name}${extra}` }, classes: d.kind });
    }
    for (const c of h.containers) {
      els.push({
        data: { id: c.id, parent: h.id, label: `${c.name}\n${c.ip ?? '-'}`, container: true },
        classes: 'container',
      });
    }
  }
  for (const e of t.edges)
    els.push({ data: { id: e.id, source: e.source, target: e.target }, classes: e.kind });
  return els;
}

function render(t) {
  topo = t;
  document.body.classList.toggle('empty', t.state === 'empty');
  $('empty').textContent = t.state === 'empty' ? t.message : '';
  $('summary').textContent =
    t.state === 'empty'
      ? `lab ${t.lab}`
      : `lab ${t.lab}: ${t.backend} backend, network ${t.network}, ${t.hosts.length} hosts`;
  const lt = $('leases');
  lt.replaceChildren();
  for (const l of t.leases) {
    const tr = document.createElement('tr');
    for (const v of [
      l.host,
      l.subnet,
      l.publicIp,
      l.expiresAt ? `until ${l.expiresAt.replace('T', ' ').replace(/\..*/, '')}` : '',
    ]) {
      const td = document.createElement('td');
      td.textContent = v;
      tr.append(td);
    }
    lt.append(tr);
  }
  const els = elementsOf(t);
  const key = els
    .map((e) => `${e.data.id}|${e.data.label ?? ''}|${e.classes}`)
    .sort()
    .join(',');
  if (key === drawnKey) return;
  drawnKey = key;
  cy.elements().remove();
  if (t.state === 'empty' && t.hosts.length === 0) return;
  cy.add(els);
  cy.layout({
    name: 'cose',
    animate: false,
    nodeRepulsion: () => 80000,
    idealEdgeLength: () => 60,
    randomize: false,
    padding: 20,
  }).run();
  cy.fit(undefined, 20);
  picked = picked.filter((id) => cy.getElementById(id).nonempty());
  for (const id of picked) cy.getElementById(id).addClass('selected');
  if (shown && picked.length === 2) drawHops(shown.hops);
}

let shown = null;

/** Mark the path's nodes and draw numbered edges from hop to hop. */
function drawHops(hops) {
  cy.remove('edge.hop');
  cy.nodes().removeClass('onpath');
  let prev = null;
  for (const h of hops) {
    const n = cy.getElementById(h.node);
    if (n.empty()) continue;
    n.addClass('onpath');
    if (prev && prev !== h.node)
      cy.add({
        data: { id: `hop-${h.n}`, source: prev, target: h.node, label: String(h.n) },
        classes: 'hop',
      });
    prev = h.node;
  }
}

function clearPath() {
  shown = null;
  cy.remove('edge.hop');
  cy.nodes().removeClass('onpath');
  $('path').replaceChildren();
}

async function showPath(src, dst) {
  clearPath();
  const res = await fetch(`/api/path?src=${encodeURIComponent(src)}&dst=${encodeURIComponent(dst)}`);
  const body = await res.json();
  const box = $('path');
  if (!res.ok) {
    box.textContent = body.error?.message ?? 'no path';
    return;
  }
  const head = document.createElement('p');
  head.id = 'path-title';
  head.textContent = `${src} → ${dst} (${body.hops.length} hops, ${body.source === 'trace' ? 'from weft trace' : "from the lab's data"})`;
  box.append(head);
  if (body.note) {
    const n = document.createElement('p');
    n.className = 'entry';
    n.textContent = body.note;
    box.append(n);
  }
  const ol = document.createElement('ol');
  ol.id = 'hops';
  for (const h of body.hops) {
    const li = document.createElement('li');
    li.className = `hop ${h.status === 'broken' ? 'broken' : ''}`;
    const b = document.createElement('b');
    b.textContent = `${h.where}: ${h.what}`;
    const e = document.createElement('div');
    e.className = 'entry';
    e.textContent = h.entry + (h.problem ? ` — ${h.problem}` : '');
    li.append(b, e);
    ol.append(li);
  }
  box.append(ol);
  shown = body;
  drawHops(body.hops);
}

cy.on('tap', 'node.container', (ev) => {
  const id = ev.target.id();
  if (picked.length >= 2) {
    for (const p of picked) cy.getElementById(p).removeClass('selected');
    picked = [];
    clearPath();
  }
  if (picked.includes(id)) return;
  picked.push(id);
  ev.target.addClass('selected');
  $('hint').textContent =
    picked.length === 1 ? `From ${id}: now click the destination.` : `${picked[0]} → ${picked[1]}`;
  if (picked.length === 2)
    showPath(picked[0], picked[1]).catch((e) => {
      $('path').textContent = String(e);
    });
});

// For tests and the console: pick two containers by id.
window.weftCy = cy;
window.weftPick = (src, dst) => {
  picked = [src, dst];
  return showPath(src, dst);
};

const es = new EventSource('/api/events');
es.addEventListener('topology', (ev) => render(JSON.parse(ev.data)));
es.onerror = () => {
  if (!topo) {
    document.body.classList.add('empty');
    $('empty').replaceChildren(text('The weft ui server does not answer.'));
  }
};
