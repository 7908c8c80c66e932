// DeT front-end extension (served as /extensions/<pack folder>/det.js): a live loss curve on "Train DeT Adapter" while it trains.
// The node sends a `det.train` websocket event per step ({node, step, total, loss, flow, track, timestep});
// the curve is kept per node id in window.DeT.curves and drawn under the node's widgets. No build step.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const curves = {};
window.DeT = { curves };

function record(d) {
  const id = String(d.node);
  const pts = (curves[id] ??= []);
  if (pts.length && d.step <= pts[pts.length - 1].step) pts.length = 0; // a new run (or a resume) starts over
  pts.push(d);
  const node = app.graph?.getNodeById?.(Number(id)) ?? app.graph?.getNodeById?.(id);
  if (node) {
    node.detCurve = pts;
    node.setDirtyCanvas?.(true, false);
  }
}

function drawCurve(node, ctx) {
  const pts = node.detCurve;
  if (!pts || pts.length < 2 || node.flags?.collapsed) return;
  const w = node.size[0] - 20, h = 70, x0 = 10, y0 = node.size[1] - h - 8;
  const losses = pts.map((p) => p.loss);
  const lo = Math.min(...losses), hi = Math.max(...losses), span = hi - lo || 1;
  const last = pts[pts.length - 1];
  ctx.save();
  ctx.fillStyle = "rgba(0,0,0,0.35)";
  ctx.fillRect(x0, y0, w, h);
  ctx.strokeStyle = "#4ea1ff";
  ctx.lineWidth = 1.5;
  ctx.beginPath();
  pts.forEach((p, i) => {
    const x = x0 + (w * i) / (pts.length - 1), y = y0 + h - 4 - ((p.loss - lo) / span) * (h - 14);
    i ? ctx.lineTo(x, y) : ctx.moveTo(x, y);
  });
  ctx.stroke();
  ctx.fillStyle = "#ddd";
  ctx.font = "11px sans-serif";
  ctx.fillText(`step ${last.step}/${last.total}  loss ${last.loss.toFixed(4)}`, x0 + 4, y0 + 11);
  ctx.restore();
}

app.registerExtension({
  name: "DeT.TrainingCurve",
  setup() {
    api.addEventListener("det.train", (ev) => record(ev.detail));
  },
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== "DeTTrainAdapter") return;
    const onDrawForeground = nodeType.prototype.onDrawForeground;
    nodeType.prototype.onDrawForeground = function (ctx) {
      onDrawForeground?.apply(this, arguments);
      drawCurve(this, ctx);
    };
    const computeSize = nodeType.prototype.computeSize;
    nodeType.prototype.computeSize = function () {
      const size = computeSize ? computeSize.apply(this, arguments) : [320, 200];
      return [size[0], size[1] + 80]; // room for the curve
    };
  },
});
