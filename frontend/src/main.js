// The page's entry, deliberately tiny (no Cornerstone): it starts every request the viewer needs
// at once (series list, the case's findings, the metadata of the series to open), paints the first
// image from the raw middle slice (firstpaint.js), and only then evaluates the viewer proper
// (app.js: Cornerstone, ~3 MB, already downloaded and parsed through <link rel=modulepreload>).
import './viewer.css';
import { getJSON } from './api.js';
import { paintFirstImage } from './firstpaint.js';

performance.mark('radloop:boot');
const config = JSON.parse(document.getElementById('viewer-config').textContent);
const DICOM_JSON = 'application/dicom+json';
const root = config.dicomwebRoot;
const seriesUid = new URLSearchParams(location.search).get('series') || config.seriesUid;

// Each promise keeps its rejection for app.js; the no-op catch only stops "unhandled" noise.
const quiet = (p) => { p?.catch(() => {}); return p; };
const prefetched = {
  config,
  seriesUid,
  seriesRows: quiet(getJSON(`${root}/studies/${config.studyUid}/series`, DICOM_JSON)),
  review: quiet(getJSON(config.reviewApi)),
  instances: seriesUid
    ? quiet(getJSON(`${root}/studies/${config.studyUid}/series/${seriesUid}/metadata`, DICOM_JSON)) : null,
};

const painted = seriesUid
  ? paintFirstImage({ root, studyUid: config.studyUid, seriesUid, instances: prefetched.instances, host: document.querySelector('#vp-stack .vp-el') })
    .catch((err) => { console.warn('first paint skipped:', err); return false; })
  : Promise.resolve(false);

// Evaluating Cornerstone holds the main thread for a few hundred ms; the preview goes first unless
// its requests are slow (a cold server), in which case the viewer does not wait for it.
await Promise.race([painted, new Promise((resolve) => setTimeout(resolve, 700))]);
const app = await import('./app.js');
app.start(prefetched);
