"""`--format triton` and `--format deepstream`: configs read with the consumers' own schemas,
graphs run with ONNX Runtime and compared with the fused model."""

import json

import numpy as np
import onnx
import pytest
import yaml

from fogreid.calibration.trt_cache import write_cache
from fogreid.errors import FogreidError
from fogreid.fileio import sha256_file

from conftest import SIZE, foggy_frames, make_checkpoint

tritonclient = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="tritonclient is in the dev extra")

ONNX_TO_TRITON = {onnx.TensorProto.UINT8: "TYPE_UINT8", onnx.TensorProto.FLOAT: "TYPE_FP32"}


@pytest.fixture(scope="module")
def scale_export(synth_root, tmp_path_factory):
    from fogreid.export.exporter import ExportOptions, export
    from fogreid.export.formats import parse_formats

    out = tmp_path_factory.mktemp("scale")
    ckpt = make_checkpoint(out / "edge.pt", synth_root)
    result = export(ckpt, parse_formats("onnx,triton,deepstream"), out / "artifacts",
                    ExportOptions(batch=(1, 4, 16), progress=False))
    return ckpt, result


def parse_config(path):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def check_against_onnx(config, onnx_path, max_batch):
    """Names, Triton dtypes and dims (without the batch) of the config agree with the graph."""
    from tritonclient.grpc import model_config_pb2

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    assert config.max_batch_size == max_batch
    for declared, actual in ((config.input, graph.input), (config.output, graph.output)):
        assert [t.name for t in declared] == [t.name for t in actual]
        for t, v in zip(declared, actual, strict=True):
            dims = v.type.tensor_type.shape.dim
            assert not dims[0].HasField("dim_value"), "the graph's batch must be dynamic"
            assert list(t.dims) == [d.dim_value for d in dims[1:]]
            assert model_config_pb2.DataType.Name(t.data_type) == ONNX_TO_TRITON[v.type.tensor_type.elem_type]
    assert all(1 <= b <= max_batch for b in config.dynamic_batching.preferred_batch_size)


def test_triton_repository_parses_and_matches_the_onnx(scale_export):
    import onnxruntime as ort
    from tritonclient.grpc import model_config_pb2

    ckpt, result = scale_export
    repo = result.files["triton"]
    config = parse_config(repo / "fogreid" / "config.pbtxt")
    assert config.name == "fogreid" and config.backend == "onnxruntime"
    model = repo / "fogreid" / "1" / "model.onnx"
    # FP16: the served graph is the FP16 one with InstanceNorm and the embedding tail in FP32, not
    # the FP32 graph that TensorRT's weakly typed FP16 would run unprotected.
    served = onnx.load(str(model))
    assert {p.key: p.value for p in served.metadata_props}["precision"] == "fp16"
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in served.graph.initializer)
    bnneck = next(n for n in served.graph.node if n.op_type == "BatchNormalization" and "bnneck" in n.name)
    assert all(t.data_type == onnx.TensorProto.FLOAT for t in served.graph.initializer if t.name in bnneck.input)
    check_against_onnx(config, model, 16)
    kinds = {model_config_pb2.ModelInstanceGroup.Kind.Name(g.kind) for g in config.instance_group}
    assert kinds == {"KIND_GPU", "KIND_CPU"}
    (trt,) = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert trt.name == "tensorrt" and trt.parameters["precision_mode"] == "FP16"
    assert "int8_calibration_table_name" not in trt.parameters
    assert trt.parameters["trt_profile_max_shapes"] == f"frames:16x{SIZE[0]}x{SIZE[1]}x3"
    identity = json.loads((repo / "fogreid" / "fogreid.json").read_text())
    assert identity["checkpoint_sha256"] == sha256_file(ckpt) and identity["served_onnx"] == "model_fp16.onnx"
    # the repository's graph takes the config's largest batch
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    frames = np.zeros((config.max_batch_size, *SIZE, 3), np.uint8)
    defogged, embedding = session.run(None, {"frames": frames})
    assert defogged.shape == (16, *SIZE, 3) and embedding.shape == (16, config.output[1].dims[0])


def test_triton_int8_and_plan_configs(exported, tmp_path):
    """INT8 on TensorRT 10: the FP32 graph + our calibration table (TensorRT's native format) in the
    accelerator's cache folder. Engines cannot be built here (no TensorRT), so the tensorrt_plan
    model is written from a stand-in plan file and its sidecar record."""
    from fogreid.calibration.trt_cache import read_cache
    from fogreid.export.triton import write_repository

    _, result = exported
    cache = result.files["calibration-cache"]
    plan = tmp_path / "model_fp16.engine"
    plan.write_bytes(b"not a real engine: only the config is checked here")
    record = {"compute_capability": "8.7", "batch": [1, 8, 32], "precision": "fp16"}
    configs = write_repository(tmp_path / "triton", result.files["onnx"], SIZE, 512, (1, 8, 32), {},
                               calibration_cache=cache, engines={"engine-fp16": (plan, record)})
    config = parse_config(configs["fogreid"])
    params = config.optimization.execution_accelerators.gpu_execution_accelerator[0].parameters
    assert params["precision_mode"] == "INT8" and params["int8_use_native_calibration_table"] == "1"
    assert "runs FP32, not FP16" in configs["fogreid"].read_text()   # precision_mode takes one value
    table = tmp_path / "triton" / "fogreid" / "trt_cache" / params["int8_calibration_table_name"]
    assert params["trt_engine_cache_path"] == "/models/fogreid/trt_cache"
    assert read_cache(table) == read_cache(cache)
    assert sha256_file(tmp_path / "triton" / "fogreid" / "1" / "model.onnx") == sha256_file(result.files["onnx"])
    check_against_onnx(config, result.files["onnx"], 32)
    plan_config = parse_config(configs["fogreid_engine_fp16"])
    assert plan_config.platform == "tensorrt_plan" and plan_config.cc_model_filenames["8.7"] == "model.plan"
    assert (tmp_path / "triton" / "fogreid_engine_fp16" / "1" / "model.plan").read_bytes() == plan.read_bytes()
    check_against_onnx(plan_config, result.files["onnx"], 32)  # an engine keeps the ONNX's tensors


def test_triton_int8_on_tensorrt_11_serves_the_qdq_model(exported, tmp_path):
    """TensorRT 11 has no implicit INT8 (no calibrator, no table): the ONNX Runtime model is the Q/DQ
    one, with no precision_mode (TensorRT 11 has no precision flags) and no calibration table."""
    from fogreid.export.triton import write_repository

    _, result = exported
    for version, cache in (((11, 1, 0), result.files["calibration-cache"]), (None, tmp_path / "calibration.cache")):
        if version is None:   # the version comes from the cache header when not given
            write_cache(cache, {"x": 0.5}, (11, 4, 1))
        repo = tmp_path / f"triton{version}"
        configs = write_repository(repo, result.files["onnx"], SIZE, 512, (1, 8, 32), {}, calibration_cache=cache,
                                   trt_version=version, qdq_onnx=result.files["onnx-int8"])
        assert sha256_file(repo / "fogreid" / "1" / "model.onnx") == sha256_file(result.files["onnx-int8"])
        params = parse_config(configs["fogreid"]).optimization.execution_accelerators.gpu_execution_accelerator[0]
        assert not {"precision_mode", "int8_calibration_table_name"} & set(params.parameters)
        assert not (repo / "fogreid" / "trt_cache").exists()
        assert json.loads((repo / "fogreid" / "fogreid.json").read_text())["served_onnx"] == "model_int8.onnx"
    with pytest.raises(FogreidError, match="serves the Q/DQ model"):
        write_repository(tmp_path / "none", result.files["onnx"], SIZE, 512, (1, 8, 32), {},
                         calibration_cache=cache, qdq_onnx=tmp_path / "missing_int8.onnx")


def test_triton_plan_batches_only_within_the_engine_profile(exported, tmp_path):
    """The TensorRT backend rejects a batch outside the engine's profile (tensorrt_backend
    src/instance_state.cc -> ValidateDimension) and the dynamic batcher sends 1..max_batch_size:
    a DLA engine's static profile gets max_batch_size 0, whole batches, no dynamic batching."""
    from fogreid.export.triton import write_repository

    _, result = exported
    plan = tmp_path / "model.engine"
    plan.write_bytes(b"stand-in")
    engines = {"engine-fp16": (plan, {"batch": [4, 4, 4], "compute_capability": "8.7"}),
               "engine-int8": (plan, {"batch": [2, 4, 8], "compute_capability": "8.7"})}
    configs = write_repository(tmp_path / "triton", result.files["onnx"], SIZE, 512, (4, 4, 4), {}, engines=engines)
    static = parse_config(configs["fogreid_engine_fp16"])
    assert static.max_batch_size == 0 and not static.HasField("dynamic_batching")
    assert list(static.input[0].dims) == [4, *SIZE, 3] and list(static.output[1].dims) == [4, 512]
    assert "max_batch_size 0" in configs["fogreid_engine_fp16"].read_text()   # and why
    ranged = parse_config(configs["fogreid_engine_int8"])
    assert ranged.max_batch_size == 0 and list(ranged.input[0].dims) == [-1, *SIZE, 3]
    # The ONNX Runtime model (GPU, not DLA) takes the batcher's 1..max whatever the engines' profile.
    onnx_model = parse_config(configs["fogreid"])
    params = onnx_model.optimization.execution_accelerators.gpu_execution_accelerator[0].parameters
    assert onnx_model.max_batch_size == 4 and params["trt_profile_min_shapes"] == f"frames:1x{SIZE[0]}x{SIZE[1]}x3"


def deepstream_preprocess(crops, reid):
    """DeepStream's tracker ReID preprocessing, as documented: scale each crop to inferDims
    (letterboxed when keepAspc), convert to colorFormat, y = netScaleFactor * (x - offsets),
    lay out as inputOrder."""
    import cv2

    _, h, w = reid["inferDims"]
    out = []
    for crop in crops:
        if reid["keepAspc"]:
            scale = min(h / crop.shape[0], w / crop.shape[1])
            nh, nw = round(crop.shape[0] * scale), round(crop.shape[1] * scale)
            canvas = np.zeros((h, w, 3), np.uint8)
            canvas[:nh, :nw] = cv2.resize(crop, (nw, nh), interpolation=cv2.INTER_LINEAR)
            crop = canvas
        else:
            crop = cv2.resize(crop, (w, h), interpolation=cv2.INTER_LINEAR)
        pixels = crop[..., ::-1] if reid["colorFormat"] == 0 else crop      # BGR decode -> RGB
        y = reid["netScaleFactor"] * (pixels.astype(np.float32) - np.array(reid["offsets"], np.float32))
        out.append(y.transpose(2, 0, 1) if reid["inputOrder"] == 0 else y)
    return np.stack(out).astype(np.float32)


def test_deepstream_embedding_matches_the_fused_model(scale_export, synth_root):
    import cv2
    import onnxruntime as ort

    from conftest import run_onnx

    _, result = scale_export
    reid = yaml.safe_load(result.files["deepstream-config"].read_text())["ReID"]
    proto = onnx.load(str(result.files["deepstream-onnx"]))
    assert [i.name for i in proto.graph.input] == ["input"] and len(proto.graph.output) == 1
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert not {"ConvTranspose", "Tanh"} & {n.op_type for n in proto.graph.node}, "the defog head must be pruned"
    dims = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim[1:]]
    assert dims == reid["inferDims"] == [3, *SIZE]
    assert reid["reidFeatureSize"] == proto.graph.output[0].type.tensor_type.shape.dim[1].dim_value
    assert reid["onnxFile"] == result.files["deepstream-onnx"].name and reid["batchSize"] == 16

    frames = foggy_frames(synth_root, 12)
    # crops of other sizes too: DeepStream scales them; the fused model gets the same scaling
    crops = list(frames[:6]) + [cv2.resize(f, (48, 80)) for f in frames[6:]]
    session = ort.InferenceSession(str(result.files["deepstream-onnx"]), providers=["CPUExecutionProvider"])
    (feature,) = session.run(None, {"input": deepstream_preprocess(crops, reid)})
    resized = np.stack([cv2.resize(c, SIZE[::-1], interpolation=cv2.INTER_LINEAR) for c in crops])
    _, reference = run_onnx(result.files["onnx"], resized)
    # The graph ends before the L2 norm and the tracker normalises (addFeatureNormalization 1).
    assert reid["addFeatureNormalization"] == 1 and not np.allclose(np.linalg.norm(feature, axis=1), 1, atol=1e-3)
    embedding = feature / np.linalg.norm(feature, axis=1, keepdims=True)
    cosine = (embedding * reference).sum(axis=1)
    assert cosine.min() >= 0.9999, cosine.min()


def test_deepstream_fp16_embedding_on_a_trained_checkpoint(trained, synth_root, tmp_path):
    """DeepStream builds the ReID engine weakly typed at networkMode 1 (FP16), no per-layer FP32:
    so the graph has no L2 norm (whose squared sum overflows FP16) and what it keeps, the BNNeck,
    is measured here in FP16 against FP32: every tensor stored in FP16 (ONNX Runtime runs the
    FP16 graph, casting around ops it has no FP16 kernel for), InstanceNorm in FP32 as TensorRT
    computes INormalizationLayer (NvInfer.h), then L2-normalised as the tracker does."""
    import onnxruntime as ort
    from onnxruntime.transformers.float16 import convert_float_to_float16

    from fogreid.export.deepstream import export_embedding_onnx
    from fogreid.model.fused import FusedDefogReID

    ckpt, _ = trained
    path = export_embedding_onnx(FusedDefogReID.from_checkpoint(ckpt), tmp_path / "reid.onnx", {})
    proto = onnx.load(str(path))
    assert not {"ReduceSum", "Sqrt", "ReduceL2", "LpNormalization"} & {n.op_type for n in proto.graph.node}
    half = convert_float_to_float16(proto, keep_io_types=True, node_block_list=[
        n.name for n in proto.graph.node if n.op_type == "InstanceNormalization"])
    onnx.save(half, str(tmp_path / "reid16.onnx"))
    frames = np.concatenate([foggy_frames(synth_root, 32, "query"), foggy_frames(synth_root, 32, "gallery")])
    images = (frames[..., ::-1].astype(np.float32) / 255).transpose(0, 3, 1, 2).copy()
    out = [ort.InferenceSession(str(f), providers=["CPUExecutionProvider"]).run(None, {"input": images})[0]
           for f in (path, tmp_path / "reid16.onnx")]
    unit = [o / np.linalg.norm(o.astype(np.float64), axis=1, keepdims=True) for o in out]
    cosine = (unit[0] * unit[1]).sum(axis=1)
    print(f"\nDeepStream graph, FP16 storage vs FP32 on a trained checkpoint: cosine min {cosine.min():.6f}")
    assert cosine.min() >= 0.999
