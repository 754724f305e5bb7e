"""benchmarks/trace_summary.py on a hand-made trace: thunk seconds by kind and layer, fusions holding convs
attributed to their layers, and the busy-thread split of the span."""
import gzip
import json

import pytest

from repo_files import load_module

HLO = """\
%fused_computation.1 (p0: f32[2,4,4,3], p1: f32[3,3,3,8]) -> f32[2,4,4,8] {
  %p0 = f32[2,4,4,3]{3,2,1,0} parameter(0)
  %p1 = f32[3,3,3,8]{3,2,1,0} parameter(1)
  %conv.1 = f32[2,4,4,8]{3,2,1,0} convolution(%p0, %p1), window={size=3x3 pad=1_1x1_1}, dim_labels=b01f_01io->b01f, metadata={op_name="jit(step)/ConvNet/conv_0/conv_general_dilated"}
  ROOT %add.1 = f32[2,4,4,8]{3,2,1,0} add(%conv.1, %conv.1), metadata={op_name="jit(step)/ConvNet/norm_0/add"}
}

%fused_computation.2 (p0: f32[2,4,4,8]) -> f32[2,4,4,8] {
  %p0 = f32[2,4,4,8]{3,2,1,0} parameter(0)
  %m.1 = f32[2,4,4,8]{3,2,1,0} multiply(%p0, %p0), metadata={op_name="jit(step)/transpose(jvp(ConvNet))/norm_1/mul"}
  ROOT %m.2 = f32[2,4,4,8]{3,2,1,0} multiply(%m.1, %p0), metadata={op_name="jit(step)/jvp(ConvNet)/norm_1/mul"}
}

ENTRY %main (x: f32[2,4,4,3], k: f32[3,3,3,8]) -> f32[2,4,4,8] {
  %x = f32[2,4,4,3]{3,2,1,0} parameter(0)
  %k = f32[3,3,3,8]{3,2,1,0} parameter(1)
  %ynn_fusion.1 = f32[2,4,4,8]{3,2,1,0} fusion(%x, %k), kind=kCustom, calls=%fused_computation.1
  ROOT %multiply_fusion.2 = f32[2,4,4,8]{3,2,1,0} fusion(%ynn_fusion.1), kind=kLoop, calls=%fused_computation.2
}
"""


def test_trace_summary_sums_thunks_by_kind_and_layer_and_busy_threads(tmp_path):
    ts = load_module("benchmarks/trace_summary.py")
    meta = [{"ph": "M", "name": "thread_name", "tid": t, "args": {"name": n}}
            for t, n in ((1, "tf_XLAEigen/1"), (2, "tf_XLAEigen/2"), (3, "python"))]
    # µs: thread 1 runs the conv fusion over [0, 3e6) and the loop fusion over [4e6, 5e6); thread 2 the loop fusion
    # over [2e6, 3e6); the python thread's event and unknown names are ignored
    events = [{"ph": "X", "tid": 1, "name": "ynn_fusion.1", "ts": 0, "dur": 3e6},
              {"ph": "X", "tid": 2, "name": "multiply_fusion.2", "ts": 2e6, "dur": 1e6},
              {"ph": "X", "tid": 1, "name": "multiply_fusion.2", "ts": 4e6, "dur": 1e6},
              {"ph": "X", "tid": 3, "name": "ynn_fusion.1", "ts": 0, "dur": 9e6},
              {"ph": "X", "tid": 1, "name": "ThunkExecutor::Execute", "ts": 0, "dur": 5e6}]
    path = tmp_path / "perfetto_trace.json.gz"
    with gzip.open(path, "wt") as f:
        json.dump({"traceEvents": meta + events}, f)
    out = ts.summarise(str(path), HLO)
    assert out["thunk_s"] == pytest.approx(5.0)
    assert out["by_kind"] == {"fusion:kCustom": 3.0, "fusion:kLoop": 2.0}
    # the conv fusion belongs to conv_0 (its conv's layer, not norm_0's add); the loop fusion to norm_1, whose op
    # names sit under a jvp/transpose of the module (jax names a gradient's ops so)
    assert out["by_layer"] == {"conv_0": 3.0, "norm_1": 2.0}
    assert out["top"] == {"fusion:kCustom conv_0": 3.0, "fusion:kLoop norm_1": 2.0}
    # [0,2) one thread, [2,3) two, [3,4) none, [4,5) one
    assert out["span_s_by_busy_threads"] == {"0": 1.0, "1": 3.0, "2": 1.0}
