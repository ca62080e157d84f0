"""What a quantized variant is: a ``Scheme`` (format + mode + options) that one backend function applies to one
graph file, and the ``Record`` it returns, which goes into the manifest next to the variant's files.

Every backend (``quantize/backends/<format>.py``) exposes::

    quantize_graph(src: Path, dst: Path, scheme: Scheme, *, calibration: list[dict[str, np.ndarray]] | None,
                   exclude: Sequence[str] = ()) -> dict

``src`` is the fp32 graph of one artifact signature (ONNX .onnx with its external data beside it, OpenVINO .xml
with its .bin, TFLite .tflite); ``dst`` the file to write (same suffix, weights beside or inside it);
``calibration`` feeds keyed by the graph's own input names (recorded by running the fp32 pipeline on real
samples: see ``quantize.calibration``), None for modes that need none; ``exclude`` the layer names the
sensitivity pass keeps in float (names as ``layers(src)`` of the same backend lists them). The returned dict
says what was done (tool and version, method, weight/activation types, granularity, excluded layers, how many
layers were quantized) and is recorded under ``parity.quantization`` of the new artifact.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: mode -> manifest precision, per format. The modes are the user-facing names of ``mmedge quantize --mode``.
MODES: dict[str, dict[str, str]] = {
    "onnx": {"dynamic-int8": "int8", "static-int8": "int8", "fp16": "fp16", "int4": "int4", "optimized": "fp32"},
    "openvino": {"static-int8": "int8", "int8-weights": "int8", "int4-weights": "int4", "fp16": "fp16"},
    "tflite": {"dynamic-int8": "int8", "int8-weights": "int8", "int4-weights": "int4", "fp16": "fp16"},
}

#: Modes whose backend needs calibration feeds.
CALIBRATED = {("onnx", "static-int8"), ("openvino", "static-int8")}
#: Modes that get the recorded feeds without calibrating: to check the written graph against its source.
CHECKED = {("onnx", "optimized")}
#: Variant names by mode where the precision alone would clash with the source variant's name.
NAMES = {("onnx", "optimized"): "fp32-opt"}
#: Options that may be given per component, as ``{component: value}`` (``"*"``: every other component).
PER_COMPONENT = ("model_type",)
#: OpenVINO weight-compression options that make it data-aware (they need calibration feeds too).
DATA_AWARE = ("awq", "scale_estimation", "gptq")


@dataclass(frozen=True)
class Scheme:
    """One way to compress one format. ``options`` are the backend's knobs (see each backend's docstring), e.g.
    ``{"calibrate_method": "entropy", "per_channel": True, "activation_type": "int16"}`` for ONNX static int8."""

    format: str
    mode: str
    options: dict = field(default_factory=dict)

    @property
    def precision(self) -> str:
        return MODES[self.format][self.mode]

    @property
    def calibrated(self) -> bool:
        """Whether the backend needs calibration feeds: static int8, and data-aware weight compression (OpenVINO
        int4 with AWQ, scale estimation or GPTQ)."""
        data_aware = self.format == "openvino" and any(self.options.get(k) for k in DATA_AWARE)
        return (self.format, self.mode) in CALIBRATED or data_aware

    @property
    def fed(self) -> bool:
        """Whether the backend gets the recorded feeds: to calibrate, or to check what it wrote."""
        return self.calibrated or (self.format, self.mode) in CHECKED

    @property
    def default_name(self) -> str:
        return NAMES.get((self.format, self.mode), self.precision)

    def for_component(self, component: str) -> Scheme:
        """This scheme with the ``PER_COMPONENT`` options given as ``{component: value}`` resolved for
        ``component`` (the ``"*"`` entry, else the option left out: the backend's default)."""
        options = dict(self.options)
        for key in PER_COMPONENT:
            if isinstance(options.get(key), dict):
                per = options.pop(key)
                if component in per or "*" in per:
                    options[key] = per.get(component, per.get("*"))
        return Scheme(self.format, self.mode, options)
