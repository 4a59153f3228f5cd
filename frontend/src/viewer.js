// Cornerstone3D set-up: a stack viewport for the first paint, then axial / coronal / sagittal
// volume viewports with crosshairs once the whole series is loaded and can be reconstructed.
import {
  Enums as csEnums, RenderingEngine, cache, eventTarget, getRenderingEngine, imageLoader,
  init as coreInit, setVolumesForViewports, utilities as csUtils, volumeLoader,
} from '@cornerstonejs/core';
import dicomImageLoader from '@cornerstonejs/dicom-image-loader';
import {
  CrosshairsTool, Enums as toolEnums, LengthTool, PanTool, StackScrollTool, ToolGroupManager,
  WindowLevelTool, ZoomTool, addTool, annotation, init as toolsInit, synchronizers,
} from '@cornerstonejs/tools';
import { dot, sub } from './geometry.js';

const { ViewportType, OrientationAxis, Events } = csEnums;
const { MouseBindings } = toolEnums;
const ENGINE = 'radloop';
export const PRESETS = {
  1: { name: 'Lung', center: -600, width: 1500 },
  2: { name: 'Mediastinum', center: 50, width: 350 },
  3: { name: 'Bone', center: 500, width: 2000 },
  4: { name: 'Abdomen', center: 40, width: 400 },
};
const MPR_NAMES = ['axial', 'coronal', 'sagittal'];
const ORIENTATION = { axial: OrientationAxis.AXIAL, coronal: OrientationAxis.CORONAL, sagittal: OrientationAxis.SAGITTAL };
const PRIMARY = {
  wl: WindowLevelTool.toolName, pan: PanTool.toolName, zoom: ZoomTool.toolName,
  length: LengthTool.toolName, crosshairs: CrosshairsTool.toolName,
};

let initialised = false;
export function initCornerstone() {
  if (initialised) return;
  coreInit();
  dicomImageLoader.init({ maxWebWorkers: Math.max(1, Math.min(navigator.hardwareConcurrency || 2, 4)) });
  toolsInit();
  for (const Tool of [WindowLevelTool, PanTool, ZoomTool, StackScrollTool, LengthTool, CrosshairsTool]) addTool(Tool);
  initialised = true;
}

export class CTViewer {
  constructor({ container, onSliceChange, onVoiChange, onRender }) {
    this.container = container;
    this.onSliceChange = onSliceChange || (() => {});
    this.onVoiChange = onVoiChange || (() => {});
    this.onRender = onRender || (() => {});
    this.engine = getRenderingEngine(ENGINE) || new RenderingEngine(ENGINE);
    this.mode = null; // 'stack' | 'mpr'
    this.series = null;
    this.voi = { center: -600, width: 1500 };
    this.tool = 'wl';
    this.activeName = 'stack';
    this.loaded = 0;
    this.elements = {};
    for (const name of ['stack', ...MPR_NAMES]) {
      this.elements[name] = container.querySelector(`#vp-${name} .vp-el`);
      this.elements[name].addEventListener('pointerenter', () => { this.activeName = name; });
      this.elements[name].addEventListener('pointerdown', () => { this.activeName = name; });
      this.elements[name].addEventListener('contextmenu', (e) => e.preventDefault());
    }
  }

  get names() {
    return this.mode === 'mpr' ? MPR_NAMES : ['stack'];
  }

  viewport(name = this.activeName) {
    return this.engine.getViewport(name);
  }

  // ---- loading ---------------------------------------------------------------------------------

  async openSeries(series, { onFirstImage, onProgress }) {
    this.teardown();
    this.series = series;
    this.voi = { ...(series.defaultVoi || PRESETS[1]) };
    this.showLayout('stack');
    this.engine.enableElement({
      viewportId: 'stack', type: ViewportType.STACK, element: this.elements.stack,
      defaultOptions: { background: [0, 0, 0] },
    });
    this.mode = 'stack';
    this.activeName = 'stack';
    this.stackGroup = this.makeToolGroup('radloop-stack', ['stack'], false);
    this.watchElement('stack');
    const vp = this.viewport('stack');
    const start = Math.floor(series.imageIds.length / 2);
    const rendered = new Promise((resolve) => {
      const once = () => { this.elements.stack.removeEventListener(Events.IMAGE_RENDERED, once); resolve(); };
      this.elements.stack.addEventListener(Events.IMAGE_RENDERED, once);
    });
    await vp.setStack(series.imageIds, start);
    this.applyVoi();
    vp.render();
    await rendered;
    onFirstImage();
    await this.loadAll(onProgress);
  }

  // Loads every slice: through a streaming volume when MPR is possible (the stack viewport shows
  // the same cached images meanwhile), else image by image.
  async loadAll(onProgress) {
    const { imageIds } = this.series;
    const wanted = new Set(imageIds);
    let done = 0;
    const counted = new Set();
    const onLoaded = (evt) => {
      const id = evt.detail?.image?.imageId || evt.detail?.imageId;
      if (wanted.has(id) && !counted.has(id)) {
        counted.add(id);
        done = counted.size;
        onProgress(done, imageIds.length);
      }
    };
    eventTarget.addEventListener(Events.IMAGE_LOADED, onLoaded);
    try {
      if (!this.series.mprReason) {
        this.volumeId = `cornerstoneStreamingImageVolume:${this.series.seriesUid}`;
        const volume = await volumeLoader.createAndCacheVolume(this.volumeId, { imageIds });
        await new Promise((resolve, reject) => {
          volume.load((evt) => {
            if (evt?.framesProcessed >= evt?.totalNumFrames || evt?.complete) resolve();
          });
          const finished = (e) => {
            if (e.detail?.volumeId === this.volumeId) {
              eventTarget.removeEventListener(Events.IMAGE_VOLUME_LOADING_COMPLETED, finished);
              resolve();
            }
          };
          eventTarget.addEventListener(Events.IMAGE_VOLUME_LOADING_COMPLETED, finished);
          setTimeout(() => reject(new Error('the series did not finish loading in 10 minutes')), 600000);
        });
      } else {
        let next = 0;
        const worker = async () => {
          while (next < imageIds.length) {
            const id = imageIds[next++];
            await imageLoader.loadAndCacheImage(id);
            onLoaded({ detail: { imageId: id } });
          }
        };
        await Promise.all(Array.from({ length: 6 }, worker));
      }
    } finally {
      eventTarget.removeEventListener(Events.IMAGE_LOADED, onLoaded);
    }
    onProgress(imageIds.length, imageIds.length);
  }

  // Switches the stack view to three linked orthogonal volume views through the current slice.
  async enterMpr() {
    const keep = this.currentWorldPoint();
    this.showLayout('mpr');
    const inputs = MPR_NAMES.map((name) => ({
      viewportId: name, type: ViewportType.ORTHOGRAPHIC, element: this.elements[name],
      defaultOptions: { orientation: ORIENTATION[name], background: [0, 0, 0] },
    }));
    this.engine.disableElement('stack');
    this.stackGroup && ToolGroupManager.destroyToolGroup('radloop-stack');
    this.stackGroup = null;
    this.engine.setViewports(inputs);
    this.mode = 'mpr';
    this.activeName = 'axial';
    this.mprGroup = this.makeToolGroup('radloop-mpr', MPR_NAMES, true);
    await setVolumesForViewports(this.engine, [{ volumeId: this.volumeId }], MPR_NAMES);
    for (const name of MPR_NAMES) this.watchElement(name);
    this.voiSync = synchronizers.createVOISynchronizer('radloop-voi', { syncInvertState: false, syncColormap: false });
    for (const name of MPR_NAMES) this.voiSync.add({ renderingEngineId: ENGINE, viewportId: name });
    this.applyVoi();
    this.goTo(keep, { centre: false });
    this.setTool(this.tool);
    this.engine.render();
  }

  showLayout(layout) {
    this.container.dataset.layout = layout;
    this.container.querySelector('#vp-stack').hidden = layout !== 'stack';
    for (const name of MPR_NAMES) this.container.querySelector(`#vp-${name}`).hidden = layout !== 'mpr';
    this.engine.resize(true, true);
  }

  makeToolGroup(id, viewportIds, withCrosshairs) {
    ToolGroupManager.destroyToolGroup(id);
    const group = ToolGroupManager.createToolGroup(id);
    for (const name of [WindowLevelTool, PanTool, ZoomTool, StackScrollTool, LengthTool]) group.addTool(name.toolName);
    if (withCrosshairs) {
      group.addTool(CrosshairsTool.toolName, {
        getReferenceLineColor: (viewportId) => ({ axial: 'rgb(255, 90, 90)', coronal: 'rgb(90, 220, 90)', sagittal: 'rgb(90, 160, 255)' }[viewportId]),
        getReferenceLineControllable: () => true,
        getReferenceLineDraggableRotatable: () => false,
        getReferenceLineSlabThicknessControlsOn: () => false,
      });
    }
    for (const viewportId of viewportIds) group.addViewport(viewportId, ENGINE);
    group.setToolActive(StackScrollTool.toolName, { bindings: [{ mouseButton: MouseBindings.Wheel }] });
    // Slices of the stack are in ascending patient z; inverted, wheel-down goes to the feet as in the volume views.
    if (!withCrosshairs) group.setToolConfiguration(StackScrollTool.toolName, { invert: true });
    group.setToolActive(PanTool.toolName, { bindings: [{ mouseButton: MouseBindings.Auxiliary }] });
    group.setToolActive(ZoomTool.toolName, { bindings: [{ mouseButton: MouseBindings.Secondary }] });
    group.setToolPassive(LengthTool.toolName);
    this.group = group;
    this.setTool(this.tool);
    return group;
  }

  // Primary mouse button: wl | pan | zoom | length | crosshairs | none (brush, eraser, add: the app's own)
  setTool(tool) {
    this.tool = tool;
    const group = this.group;
    if (!group) return;
    for (const [key, name] of Object.entries(PRIMARY)) {
      if (!group.hasTool(name)) continue;
      if (key === tool) continue;
      if (name === PanTool.toolName) group.setToolActive(name, { bindings: [{ mouseButton: MouseBindings.Auxiliary }] });
      else if (name === ZoomTool.toolName) group.setToolActive(name, { bindings: [{ mouseButton: MouseBindings.Secondary }] });
      else if (name === CrosshairsTool.toolName && this.mode === 'mpr') group.setToolPassive(name);
      else group.setToolPassive(name);
    }
    const name = PRIMARY[tool];
    if (name && group.hasTool(name)) {
      const bindings = [{ mouseButton: MouseBindings.Primary }];
      if (name === PanTool.toolName) bindings.push({ mouseButton: MouseBindings.Auxiliary });
      if (name === ZoomTool.toolName) bindings.push({ mouseButton: MouseBindings.Secondary });
      group.setToolActive(name, { bindings });
    }
  }

  watchElement(name) {
    const el = this.elements[name];
    const changed = () => this.onRender(name);
    el.addEventListener(Events.IMAGE_RENDERED, changed);
    el.addEventListener(Events.CAMERA_MODIFIED, () => this.onSliceChange(name));
    el.addEventListener(Events.STACK_NEW_IMAGE, () => this.onSliceChange(name));
    el.addEventListener(Events.VOI_MODIFIED, (evt) => {
      const range = evt.detail?.range;
      if (range) {
        this.voi = { center: (range.lower + range.upper) / 2, width: range.upper - range.lower };
        this.onVoiChange(this.voi);
      }
    });
  }

  teardown() {
    annotation.state.removeAllAnnotations();
    for (const id of ['radloop-stack', 'radloop-mpr']) ToolGroupManager.destroyToolGroup(id);
    synchronizers && this.voiSync && this.voiSync.destroy();
    this.voiSync = null;
    for (const name of ['stack', ...MPR_NAMES]) {
      if (this.engine.getViewport(name)) this.engine.disableElement(name);
    }
    if (this.volumeId) cache.removeVolumeLoadObject(this.volumeId);
    this.volumeId = null;
    this.mode = null;
  }

  // ---- window / level --------------------------------------------------------------------------

  setVoi(center, width) {
    this.voi = { center, width };
    this.applyVoi();
    this.onVoiChange(this.voi);
  }

  applyVoi() {
    const { center, width } = this.voi;
    const voiRange = { lower: center - width / 2, upper: center + width / 2 };
    for (const name of this.names) {
      const vp = this.engine.getViewport(name);
      if (vp) { vp.setProperties({ voiRange }); vp.render(); }
    }
  }

  reset() {
    for (const name of this.names) {
      const vp = this.engine.getViewport(name);
      vp?.resetCamera();
    }
    const v = this.series.defaultVoi || PRESETS[1];
    this.setVoi(v.center, v.width);
    if (this.mode === 'mpr') this.goTo(this.series.geometry.indexToWorld([
      (this.series.geometry.columns - 1) / 2, (this.series.geometry.rows - 1) / 2, Math.floor(this.series.geometry.slices / 2),
    ]), { centre: false });
    this.engine.render();
  }

  // ---- slices ----------------------------------------------------------------------------------

  // {index, count, axis, positionMm} of a viewport's current slice (index 0-based).
  sliceInfo(name = this.activeName) {
    const vp = this.engine.getViewport(name);
    if (!vp) return null;
    const g = this.series.geometry;
    if (name === 'stack') {
      const k = vp.getCurrentImageIdIndex();
      const pos = g.positions[k];
      return { index: k, count: g.slices, axis: axisName(g.normal), positionMm: pos[axisIndex(g.normal)] };
    }
    const cam = vp.getCamera();
    const idx = g.worldToIndex(cam.focalPoint);
    const n = cam.viewPlaneNormal;
    const a = [Math.abs(dot(n, g.rowDir)), Math.abs(dot(n, g.colDir)), Math.abs(dot(n, g.normal))];
    const which = a.indexOf(Math.max(...a));
    const count = [g.columns, g.rows, g.slices][which];
    const along = [g.rowDir, g.colDir, g.normal][which];
    return {
      index: Math.max(0, Math.min(count - 1, Math.round(idx[which]))), count,
      axis: axisName(along), positionMm: cam.focalPoint[axisIndex(along)],
    };
  }

  // Scrolls like the mouse wheel: positive steps go the way wheel-down goes (towards the feet on
  // axial views, in both the stack and the volume views).
  scroll(steps, name = this.activeName) {
    const vp = this.engine.getViewport(name);
    if (!vp) return;
    if (name === 'stack') this.scrollIndex(-steps, name);
    else csUtils.scroll(vp, { delta: steps, volumeId: this.volumeId });
  }

  // Moves by a number of slices in our numbering (index grows along the voxel axis).
  scrollIndex(delta, name = this.activeName) {
    const vp = this.engine.getViewport(name);
    if (!vp) return;
    if (name === 'stack') {
      const n = this.series.imageIds.length;
      vp.setImageIdIndex(Math.max(0, Math.min(n - 1, vp.getCurrentImageIdIndex() + delta)));
      return;
    }
    // Cornerstone scrolls along the camera's view-plane normal; the voxel axis may point the other way.
    const g = this.series.geometry;
    const n = vp.getCamera().viewPlaneNormal;
    const d = [g.rowDir, g.colDir, g.normal].map((a) => dot(a, n));
    const which = d.map(Math.abs).indexOf(Math.max(...d.map(Math.abs)));
    csUtils.scroll(vp, { delta: d[which] < 0 ? -delta : delta, volumeId: this.volumeId });
  }

  scrollTo(index, name = this.activeName) {
    const info = this.sliceInfo(name);
    if (info) this.scrollIndex(Math.max(0, Math.min(info.count - 1, index)) - info.index, name);
  }

  // The world point at the centre of the current view (the slice the radiologist is looking at).
  currentWorldPoint() {
    const g = this.series.geometry;
    if (this.mode === 'stack') {
      const k = this.viewport('stack').getCurrentImageIdIndex();
      return g.indexToWorld([(g.columns - 1) / 2, (g.rows - 1) / 2, k]);
    }
    return [...this.viewport('axial').getCamera().focalPoint];
  }

  // Moves every view through a world point; centre: also pan so that the point is in the middle.
  goTo(world, { centre = true } = {}) {
    const g = this.series.geometry;
    if (this.mode === 'stack') {
      const k = Math.max(0, Math.min(g.slices - 1, Math.round(g.worldToIndex(world)[2])));
      this.viewport('stack').setImageIdIndex(k);
      return;
    }
    for (const name of MPR_NAMES) {
      const vp = this.engine.getViewport(name);
      const cam = vp.getCamera();
      const n = cam.viewPlaneNormal;
      let shift = n.map((v) => v * dot(sub(world, cam.focalPoint), n));
      if (centre) shift = sub(world, cam.focalPoint);
      const focalPoint = cam.focalPoint.map((v, i) => v + shift[i]);
      const position = cam.position.map((v, i) => v + shift[i]);
      vp.setCamera({ focalPoint, position });
    }
    this.engine.render();
  }

  // ---- coordinates ------------------------------------------------------------------------------

  canvasToWorld(name, x, y) {
    return this.engine.getViewport(name).canvasToWorld([x, y]);
  }

  worldToCanvas(name, world) {
    return this.engine.getViewport(name).worldToCanvas(world);
  }

  // Hounsfield units at a world point (nearest voxel), or null outside the series / not loaded.
  huAt(world) {
    const g = this.series.geometry;
    const [i, j, k] = g.worldToIndex(world).map(Math.round);
    if (!g.contains([i, j, k])) return null;
    return this.huAtIndex(i, j, k);
  }

  huAtIndex(i, j, k) {
    const g = this.series.geometry;
    const image = cache.getImage(this.series.imageIds[k]);
    if (!image) return null;
    const data = image.voxelManager ? image.voxelManager.getScalarData() : image.getPixelData();
    const raw = data[j * g.columns + i];
    if (raw === undefined) return null;
    const scaled = image.preScale?.scaled;
    if (scaled) return raw;
    return raw * (image.slope ?? 1) + (image.intercept ?? 0);
  }
}

function axisIndex(v) {
  const a = v.map(Math.abs);
  return a.indexOf(Math.max(...a));
}

function axisName(v) {
  return ['x', 'y', 'z'][axisIndex(v)];
}
