// metadata_props of an ONNX file, read from its bytes: onnxruntime-web does not expose them.
// ModelProto is a protobuf message; its field 14 holds StringStringEntryProto {1: key, 2: value}.
// Only the top level is walked: the graph (field 7, the weights) is skipped by its length.

function varint(bytes, pos) {
  let value = 0, scale = 1;
  for (;;) {
    if (pos >= bytes.length) throw new Error("truncated");
    const b = bytes[pos++];
    value += (b & 0x7f) * scale; // arithmetic, not shifts: lengths may pass 2^31
    if (b < 0x80) return [value, pos];
    scale *= 128;
  }
}

function fields(bytes, start, end, visit) {
  let pos = start;
  while (pos < end) {
    let tag;
    [tag, pos] = varint(bytes, pos);
    const field = Math.floor(tag / 8), wire = tag % 8;
    if (wire === 0) { [, pos] = varint(bytes, pos); }
    else if (wire === 1) pos += 8;
    else if (wire === 5) pos += 4;
    else if (wire === 2) {
      let length;
      [length, pos] = varint(bytes, pos);
      if (pos + length > end) throw new Error("truncated");
      visit(field, pos, pos + length);
      pos += length;
    } else throw new Error(`wire type ${wire}`);
  }
  if (pos !== end) throw new Error("truncated");
}

// {key: value} of the model's metadata_props; throws on bytes that are not an ONNX model
export function metadataProps(bytes) {
  const text = new TextDecoder();
  const props = {};
  let sawGraph = false;
  fields(bytes, 0, bytes.length, (field, start, end) => {
    if (field === 7) sawGraph = true;
    if (field !== 14) return;
    const entry = {};
    fields(bytes, start, end, (f, s, e) => { entry[f] = text.decode(bytes.subarray(s, e)); });
    props[entry[1] ?? ""] = entry[2] ?? "";
  });
  if (!sawGraph) throw new Error("no graph");
  return props;
}
