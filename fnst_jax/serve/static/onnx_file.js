// What the page needs to know of an exported ONNX file, read straight from its bytes: the
// metadata properties (pad, smallest side, native size, styles, dtype) and the two tiling
// functions (`tile_forward`, `norm_moments`; see fnst_jax/deploy/onnx_graph.py), which
// nothing in the file's graph calls. `functionModel(name, outputs)` turns one of them into
// a model of its own, as fnst_jax/deploy/onnx_functions.py does in Python: the function's
// body as the graph, only the nodes the wanted outputs need, the file's initializers that
// those nodes use (the function's weight inputs are named after them), so onnxruntime-web
// runs it like any model.
//
// ONNX files are protocol buffers. Only the few fields used here are decoded; nodes and
// tensors are copied byte for byte into the models written, so nothing is re-encoded that
// this reader does not understand. Field numbers are those of onnx/onnx.proto (IR v3+).

const WIRE_VARINT = 0;
const WIRE_FIXED64 = 1;
const WIRE_BYTES = 2;
const WIRE_FIXED32 = 5;

// onnx.TensorProto.DataType values used for the inputs and outputs of function models.
export const ELEMENT_TYPES = { float32: 1, uint8: 2, int64: 7 };

// The names fnst_jax.deploy gives the tiling functions, their inputs and outputs.
export const FUNCTION_DOMAIN = "fnst_jax";
export const TILE_FUNCTION = "tile_forward";
export const MOMENTS_FUNCTION = "norm_moments";
export const TILE_INPUT = "tile";
export const BOX_INPUT = "box";
export const INTERIOR_INPUT = "interior";
export const TILE_OUTPUT = "tile_stylized_float";
export const NUM_NORM_LAYERS = 15;
export const givenNames = (layer) => [`given_mean_${layer}`, `given_variance_${layer}`];
export const summaryNames = (layer) => [`count_${layer}`, `mean_${layer}`, `squares_${layer}`];

const textDecoder = new TextDecoder();
const textEncoder = new TextEncoder();

// -------------------------------------------------------------------------- reading

/** Reads varints and fields from a byte range of a protocol buffer. */
class Reader {
  constructor(bytes, start = 0, end = bytes.length) {
    this.bytes = bytes;
    this.position = start;
    this.end = end;
  }

  varint() {
    // Numbers here (lengths, tags, ir_version) stay far below 2^53: plain arithmetic.
    let value = 0;
    let scale = 1;
    for (;;) {
      if (this.position >= this.end) throw new Error("truncated protocol buffer");
      const byte = this.bytes[this.position++];
      value += (byte & 0x7f) * scale;
      if (byte < 0x80) return value;
      scale *= 128;
    }
  }

  /** Every field of the range: {number, wire, value (varint) | start/end (bytes)}. */
  *fields() {
    while (this.position < this.end) {
      const fieldStart = this.position;
      const key = this.varint();
      const field = { number: Math.floor(key / 8), wire: key & 7, fieldStart };
      if (field.wire === WIRE_VARINT) {
        field.value = this.varint();
      } else if (field.wire === WIRE_BYTES) {
        const length = this.varint();
        field.start = this.position;
        field.end = this.position + length;
        if (field.end > this.end) throw new Error("truncated protocol buffer");
        this.position = field.end;
      } else if (field.wire === WIRE_FIXED64) {
        this.position += 8;
      } else if (field.wire === WIRE_FIXED32) {
        this.position += 4;
      } else {
        throw new Error(`unsupported protocol buffer wire type ${field.wire}`);
      }
      field.fieldEnd = this.position;
      yield field;
    }
  }
}

function fieldsOf(bytes, start, end) {
  return new Reader(bytes, start, end).fields();
}

function text(bytes, field) {
  return textDecoder.decode(bytes.subarray(field.start, field.end));
}

/** Strings of one repeated field (node inputs, function inputs, ...). */
function readStrings(bytes, start, end, number) {
  const values = [];
  for (const field of fieldsOf(bytes, start, end)) {
    if (field.number === number && field.wire === WIRE_BYTES) values.push(text(bytes, field));
  }
  return values;
}

// NodeProto: input 1, output 2. The node's bytes are kept as they are.
function readNode(bytes, field) {
  return {
    inputs: readStrings(bytes, field.start, field.end, 1),
    outputs: readStrings(bytes, field.start, field.end, 2),
    bytes: bytes.subarray(field.start, field.end),
  };
}

// FunctionProto: name 1, input 4, output 5, node 7, domain 10.
function readFunction(bytes, field) {
  const fn = { name: "", domain: "", inputs: [], outputs: [], nodes: [] };
  for (const part of fieldsOf(bytes, field.start, field.end)) {
    if (part.wire !== WIRE_BYTES) continue;
    if (part.number === 1) fn.name = text(bytes, part);
    else if (part.number === 10) fn.domain = text(bytes, part);
    else if (part.number === 4) fn.inputs.push(text(bytes, part));
    else if (part.number === 5) fn.outputs.push(text(bytes, part));
    else if (part.number === 7) fn.nodes.push(readNode(bytes, part));
  }
  return fn;
}

// OperatorSetIdProto: domain 1, version 2.
function readOpset(bytes, field) {
  let domain = "";
  for (const part of fieldsOf(bytes, field.start, field.end)) {
    if (part.number === 1 && part.wire === WIRE_BYTES) domain = text(bytes, part);
  }
  return { domain, bytes: bytes.subarray(field.start, field.end) };
}

// GraphProto: initializer 5 (TensorProto, whose name is field 8), input 11 (ValueInfoProto,
// name 1).
function readGraph(bytes, field, model) {
  for (const part of fieldsOf(bytes, field.start, field.end)) {
    if (part.wire !== WIRE_BYTES) continue;
    if (part.number === 5) {
      const [name] = readStrings(bytes, part.start, part.end, 8);
      model.initializers.set(name, bytes.subarray(part.start, part.end));
    } else if (part.number === 11) {
      const [name] = readStrings(bytes, part.start, part.end, 1);
      model.graphInputs.push(name);
    }
  }
}

/**
 * An exported fnst_jax ONNX file, read from its bytes (a Uint8Array).
 * Throws an Error with a readable message for anything that is not such a file.
 */
export class OnnxFile {
  constructor(bytes) {
    this.bytes = bytes;
    this.irVersion = 0;
    this.opsets = [];
    this.properties = {};
    this.functions = new Map();
    this.initializers = new Map();
    this.graphInputs = [];
    let sawGraph = false;
    // ModelProto: ir_version 1, graph 7, opset_import 8, metadata_props 14, functions 25.
    for (const field of fieldsOf(bytes, 0, bytes.length)) {
      if (field.number === 1 && field.wire === WIRE_VARINT) this.irVersion = field.value;
      if (field.wire !== WIRE_BYTES) continue;
      if (field.number === 7) {
        readGraph(bytes, field, this);
        sawGraph = true;
      } else if (field.number === 8) {
        this.opsets.push(readOpset(bytes, field));
      } else if (field.number === 14) {
        const [key] = readStrings(bytes, field.start, field.end, 1);
        const [value] = readStrings(bytes, field.start, field.end, 2);
        this.properties[key] = value ?? "";
      } else if (field.number === 25) {
        const fn = readFunction(bytes, field);
        if (fn.domain === FUNCTION_DOMAIN) this.functions.set(fn.name, fn);
      }
    }
    if (!sawGraph || !("fnst_jax_version" in this.properties)) {
      throw new Error("not an ONNX model exported by fnst_jax");
    }
  }

  get pad() {
    return Number(this.properties.pad || 0);
  }

  /** The smallest height or width the file's graph runs (onnx_graph.smallest_side). */
  get minSide() {
    return Number(this.properties.min_side || 1);
  }

  /** The style's longest side as trained, px (the stroke scale's "auto"), or null. */
  get nativeSize() {
    const value = Number(this.properties.native_size);
    return Number.isFinite(value) && value > 0 ? Math.trunc(value) : null;
  }

  get dtype() {
    return this.properties.dtype || "float32";
  }

  /** The styles of a file with a style input, in the order of its columns; else []. */
  get styleNames() {
    return this.properties.style_input ? (this.properties.styles || "").split(",") : [];
  }

  /** Whether the file carries the functions tiling needs (files with a style input do not). */
  get canTile() {
    return this.functions.has(TILE_FUNCTION) && this.functions.has(MOMENTS_FUNCTION);
  }

  /**
   * The bytes of a model computing `outputs` of function `name` from its data inputs
   * (tile uint8 (N, H, W, 3), box and interior int64 (4), given moments float32 (C)).
   */
  functionModel(name, outputs) {
    const fn = this.functions.get(name);
    if (!fn) throw new Error(`this ONNX file has no function ${name}`);
    const nodes = neededNodes(fn.nodes, outputs);
    const used = new Set(nodes.flatMap((node) => node.inputs));
    const weights = fn.inputs.filter((input) => used.has(input) && this.initializers.has(input));
    const dataInputs = fn.inputs.filter(
      (input) => used.has(input) && !this.initializers.has(input),
    );
    const graph = [
      ...nodes.map((node) => bytesField(1, node.bytes)),
      bytesField(2, textEncoder.encode(`${name}_${nodes.length}`)),
      ...weights.map((weight) => bytesField(5, this.initializers.get(weight))),
      ...dataInputs.map((input) => bytesField(11, valueInfo(input, ...inputType(input)))),
      ...outputs.map((output) => bytesField(12, valueInfo(output, ELEMENT_TYPES.float32, null))),
    ];
    return concat([
      varintField(1, this.irVersion),
      ...this.opsets
        .filter((opset) => opset.domain !== FUNCTION_DOMAIN)
        .map((opset) => bytesField(8, opset.bytes)),
      bytesField(7, concat(graph)),
    ]);
  }
}

/** The nodes (in their order) that `outputs` depend on. */
function neededNodes(nodes, outputs) {
  const needed = new Set(outputs);
  const kept = [];
  for (let index = nodes.length - 1; index >= 0; index--) {
    const node = nodes[index];
    if (node.outputs.some((output) => needed.has(output))) {
      kept.push(node);
      for (const input of node.inputs) if (input) needed.add(input);
    }
  }
  const computed = new Set(kept.flatMap((node) => node.outputs));
  const missing = outputs.filter((output) => !computed.has(output));
  if (missing.length) throw new Error(`no node of the function computes ${missing.join(", ")}`);
  return kept.reverse();
}

/** [element type, shape] of a function's data input (shape entries: number or name). */
function inputType(name) {
  if (name === TILE_INPUT) return [ELEMENT_TYPES.uint8, ["batch", "height", "width", 3]];
  if (name === BOX_INPUT || name === INTERIOR_INPUT) return [ELEMENT_TYPES.int64, [4]];
  return [ELEMENT_TYPES.float32, ["channels"]];
}

// -------------------------------------------------------------------------- writing

function varintBytes(value) {
  const out = [];
  while (value >= 0x80) {
    out.push((value % 128) | 0x80);
    value = Math.floor(value / 128);
  }
  out.push(value);
  return Uint8Array.from(out);
}

function varintField(number, value) {
  return concat([varintBytes(number * 8 + WIRE_VARINT), varintBytes(value)]);
}

function bytesField(number, payload) {
  return concat([varintBytes(number * 8 + WIRE_BYTES), varintBytes(payload.length), payload]);
}

function stringField(number, value) {
  return bytesField(number, textEncoder.encode(value));
}

// ValueInfoProto {name 1, type 2: TypeProto {tensor_type 1: {elem_type 1, shape 2:
// TensorShapeProto {dim 1: {dim_value 1 | dim_param 2}}}}}; shape null: unknown rank.
function valueInfo(name, elementType, shape) {
  const tensor = [varintField(1, elementType)];
  if (shape) {
    const dims = shape.map((dim) =>
      bytesField(1, typeof dim === "number" ? varintField(1, dim) : stringField(2, dim)),
    );
    tensor.push(bytesField(2, concat(dims)));
  }
  return concat([stringField(1, name), bytesField(2, bytesField(1, concat(tensor)))]);
}

function concat(parts) {
  const total = parts.reduce((sum, part) => sum + part.length, 0);
  const out = new Uint8Array(total);
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}
