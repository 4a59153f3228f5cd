// Upload page: files, folders and zips -> batched multipart requests -> per-file outcomes.
// Requests are small (a few files or one zip each) so the server streams them and a slow
// network never hits a timeout; the same file sent twice is a harmless duplicate, so a failed
// request is simply retried.
const script = document.currentScript || document.querySelector('script[data-create-url]');
const CREATE_URL = script.dataset.createUrl;
const STUDY_URL = script.dataset.studyUrl;
const MAX_REQUEST_BYTES = 16 * 1024 * 1024;
const MAX_REQUEST_FILES = 32;
const PARALLEL = 2;
const RETRIES = 3;

const $ = (id) => document.getElementById(id);
const counts = { stored: 0, duplicate: 0, rejected: 0, skipped: 0 };
const studies = new Set();
let busy = false;

function csrfToken() {
  const m = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  return m ? decodeURIComponent(m[1]) : '';
}

async function postJSON(url) {
  const r = await fetch(url, { method: 'POST', headers: { 'X-CSRFToken': csrfToken() }, credentials: 'same-origin' });
  if (!r.ok) throw new Error(`${r.status} ${await r.text()}`);
  return r.json();
}

// Walk dropped folders (webkitGetAsEntry) into a flat list of {file, path}.
async function entriesToFiles(items) {
  const out = [];
  const readAll = (reader) => new Promise((resolve, reject) => {
    const acc = [];
    const next = () => reader.readEntries((batch) => {
      if (!batch.length) resolve(acc); else { acc.push(...batch); next(); }
    }, reject);
    next();
  });
  const walk = async (entry, prefix) => {
    if (entry.isFile) {
      const file = await new Promise((res, rej) => entry.file(res, rej));
      out.push({ file, path: prefix + file.name });
    } else if (entry.isDirectory) {
      for (const child of await readAll(entry.createReader())) await walk(child, prefix + entry.name + '/');
    }
  };
  const roots = [];
  for (const item of items) { const e = item.webkitGetAsEntry && item.webkitGetAsEntry(); if (e) roots.push(e); }
  for (const e of roots) await walk(e, '');
  return out;
}

function isZip(f) { return /\.zip$/i.test(f.file.name) || f.file.type === 'application/zip'; }

function makeRequests(files) {
  const requests = [];
  let current = [];
  let bytes = 0;
  for (const f of files) {
    if (isZip(f)) { requests.push([f]); continue; }
    if (current.length && (bytes + f.file.size > MAX_REQUEST_BYTES || current.length >= MAX_REQUEST_FILES)) {
      requests.push(current); current = []; bytes = 0;
    }
    current.push(f); bytes += f.file.size;
  }
  if (current.length) requests.push(current);
  return requests;
}

function send(url, group, onProgress) {
  return new Promise((resolve, reject) => {
    const form = new FormData();
    for (const f of group) { form.append('paths', f.path); form.append('files', f.file, f.path); }
    const xhr = new XMLHttpRequest();
    xhr.open('POST', url);
    xhr.setRequestHeader('X-CSRFToken', csrfToken());
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) onProgress(e.loaded / e.total); };
    xhr.onload = () => {
      if (xhr.status >= 200 && xhr.status < 300) resolve(JSON.parse(xhr.responseText));
      else if (xhr.status === 422) resolve(JSON.parse(xhr.responseText)); // every file refused: per-file reasons
      else { const err = new Error(`server answered ${xhr.status}: ${xhr.responseText.slice(0, 200)}`); err.status = xhr.status; reject(err); }
    };
    xhr.onerror = () => reject(new Error('network error'));
    xhr.send(form);
  });
}

function showResult(r) {
  counts[r.outcome] = (counts[r.outcome] || 0) + 1;
  $(`n-${r.outcome}`).textContent = counts[r.outcome];
  if (r.study_uid && (r.outcome === 'stored' || r.outcome === 'duplicate')) studies.add(r.study_uid);
  const row = document.createElement('tr');
  row.className = `outcome-${r.outcome}`;
  for (const text of [r.name, r.outcome, r.reason || '']) {
    const td = document.createElement('td');
    const b = document.createElement('bdi'); // file names and reasons may carry bidi controls
    b.textContent = text;
    td.appendChild(b);
    row.appendChild(td);
  }
  const body = $('results').tBodies[0];
  // Problems first: rejected rows go to the top where the admin looks.
  if (r.outcome === 'rejected') body.insertBefore(row, body.firstChild); else body.appendChild(row);
}

async function upload(files) {
  if (busy || !files.length) return;
  busy = true;
  $('progress-panel').hidden = false;
  const total = files.reduce((s, f) => s + f.file.size, 0) || 1;
  const done = new Map();
  const progress = () => {
    let sent = 0; for (const v of done.values()) sent += v;
    $('progress').value = sent / total;
    $('progress-text').textContent = `${Math.floor((100 * sent) / total)}%`;
  };
  $('status-line').textContent = `Uploading ${files.length} file(s)…`;
  const { batch } = await postJSON(CREATE_URL);
  const filesUrl = `${CREATE_URL}${batch}/files`;
  const requests = makeRequests(files);
  let next = 0;
  const worker = async () => {
    while (next < requests.length) {
      const i = next++;
      const group = requests[i];
      const size = group.reduce((s, f) => s + f.file.size, 0);
      for (let attempt = 1; ; attempt++) {
        try {
          const res = await send(filesUrl, group, (p) => { done.set(i, p * size); progress(); });
          res.results.forEach(showResult);
          break;
        } catch (err) {
          if (attempt >= RETRIES || (err.status && err.status < 500)) {
            group.forEach((f) => showResult({ name: f.path, outcome: 'rejected', reason: `upload failed: ${err.message}` }));
            break;
          }
          await new Promise((r) => setTimeout(r, 1000 * attempt));
        }
      }
      done.set(i, size); progress();
    }
  };
  await Promise.all(Array.from({ length: PARALLEL }, worker));
  $('status-line').textContent = 'Finishing…';
  const summary = await postJSON(`${CREATE_URL}${batch}/finish`);
  const c = summary.counts;
  $('status-line').textContent = `Done: ${c.stored} stored, ${c.duplicate} duplicate, ${c.rejected} rejected, ${c.skipped} skipped.`;
  const links = $('study-links');
  links.textContent = '';
  for (const st of summary.studies) {
    const a = document.createElement('a');
    a.href = STUDY_URL.replace('__UID__', st.study_uid);
    // Names and IDs come from the files: each in its own bidi isolate (a U+202E reorders only itself).
    const isolate = (text) => { const b = document.createElement('bdi'); b.textContent = text; return b; };
    a.append('Open ', isolate(st.patient || '(no name)'), ' · ', isolate(st.patient_id || '—'), ` · ${st.study_date || 'no date'}`);
    a.title = st.description; a.className = 'button study-link';
    links.appendChild(a);
  }
  document.body.dataset.uploadDone = '1';
  busy = false;
}

const zone = $('dropzone');
zone.addEventListener('dragover', (e) => { e.preventDefault(); zone.classList.add('over'); });
zone.addEventListener('dragleave', () => zone.classList.remove('over'));
zone.addEventListener('drop', async (e) => {
  e.preventDefault(); zone.classList.remove('over');
  const files = await entriesToFiles(e.dataTransfer.items);
  upload(files).catch((err) => { $('status-line').textContent = `Upload failed: ${err.message}`; busy = false; });
});
function takeInput(input) {
  const files = [...input.files].map((file) => ({ file, path: file.webkitRelativePath || file.name }));
  input.value = '';
  upload(files).catch((err) => { $('status-line').textContent = `Upload failed: ${err.message}`; busy = false; });
}
for (const id of ['file-input', 'folder-input']) {
  $(id).addEventListener('change', (e) => takeInput(e.target));
  // Files picked before this module ran (a fast hand, or the browser restoring the form) are not lost.
  if ($(id).files.length) takeInput($(id));
}
document.body.dataset.uploadReady = '1';
