// A Node.js client of zerodb-batch: @grpc/grpc-js with the protos loaded at run time by
// @grpc/proto-loader. Run by tests/interop/test_node.py against a real server:
//
//   ZDB_TARGET=127.0.0.1:50051 ZDB_PROJECT=... ZDB_KEY=... ZDB_PROTO_INCLUDES=dir:dir:dir node interop.mjs
//
// Each check prints one JSON line {"check": name, ...}; any failure exits non-zero.
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";

import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";
import protobuf from "protobufjs";

const { ZDB_TARGET: target, ZDB_PROJECT: project, ZDB_KEY: key } = process.env;
const includeDirs = process.env.ZDB_PROTO_INCLUDES.split(path.delimiter);
const loaderOptions = { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true };

const definition = protoLoader.loadSync(
  ["zerodb/v1/memory.proto", "zerodb/v1/event.proto", "zerodb/v1/load.proto"],
  { ...loaderOptions, includeDirs },
);
const zerodb = grpc.loadPackageDefinition(definition).zerodb.v1;
const credentials = grpc.credentials.createInsecure();
const memories = new zerodb.MemoryService(target, credentials);
const events = new zerodb.EventService(target, credentials);
const auth = new grpc.Metadata();
auth.set("x-api-key", key);

function call(client, method, request) {
  return new Promise((resolve, reject) =>
    client[method](request, auth, (error, reply) => (error ? reject(error) : resolve(reply))),
  );
}

function report(check, facts) {
  console.log(JSON.stringify({ check, ...facts }));
}

async function unaryUpsert() {
  const reply = await call(memories, "BatchUpsertMemories", {
    project_id: project,
    records: [
      { content: "User prefers concise responses", memory_type: "semantic", importance: 0.8, tags: ["preference"] },
      { content: "Project uses FastAPI + SQLAlchemy", memory_type: "semantic", importance: 0.9 },
    ],
  });
  assert.equal(reply.inserted, 2);
  assert.deepEqual(reply.results.map((r) => r.outcome), ["OUTCOME_INSERTED", "OUTCOME_INSERTED"]);
  report("unary_upsert", { inserted: reply.inserted, ids: reply.ids });
}

async function streamedLoad(records = 10000, perChunk = 500) {
  const loadId = `node-${Date.now()}`;
  const reply = await new Promise((resolve, reject) => {
    const stream = memories.StreamUpsertMemories(auth, (error, done) => (error ? reject(error) : resolve(done)));
    for (let offset = 0; offset * perChunk < records; offset++) {
      const chunk = Array.from({ length: perChunk }, (_, i) => ({
        content: `node record ${offset * perChunk + i}`,
        tags: ["node-load"],
      }));
      stream.write({ project_id: project, load_id: loadId, offset, records: chunk });
    }
    stream.end();
  });
  assert.equal(reply.chunks_committed, String(records / perChunk));
  assert.equal(reply.load.inserted, String(records));
  assert.equal(reply.load.state, "LOAD_STATE_DONE");
  report("streamed_load", { load_id: loadId, inserted: reply.load.inserted, chunks: reply.chunks_committed });
}

async function subscription() {
  const topic = `node.test.${Date.now()}`;
  const stream = events.SubscribeEvents({ project_id: project, topics: [topic], start_from_new: true }, auth);
  const received = [];
  const done = new Promise((resolve, reject) => {
    stream.on("data", async (message) => {
      if (message.kind === "heartbeat" && received.length === 0 && !stream.published) {
        stream.published = call(events, "BatchPublishEvents", {
          project_id: project,
          // protobufjs ships google.protobuf.Value with camelCase names, whatever keepCase says
          events: [1, 2, 3].map((n) => ({ topic, event_payload: { fields: { n: { numberValue: n } } } })),
        });
        stream.published.catch(reject);
      } else if (message.kind === "event") {
        received.push(message.event);
        if (received.length === 3) resolve();
      }
    });
    stream.on("error", (error) => (error.code === grpc.status.CANCELLED ? null : reject(error)));
  });
  await done;
  const published = await stream.published;
  stream.cancel();
  assert.deepEqual(received.map((e) => e.id), published.ids);
  assert.deepEqual(received.map((e) => e.event_payload.fields.n.numberValue), [1, 2, 3]);
  report("subscription", { events: received.map((e) => e.stream_id) });
}

function statusTypes() {
  const root = new protobuf.Root();
  root.resolvePath = (_, target) =>
    includeDirs.map((dir) => path.join(dir, target)).find((file) => fs.existsSync(file)) ?? target;
  root.loadSync(["google/rpc/status.proto", "google/rpc/error_details.proto"], { keepCase: true });
  return root;
}

async function richError() {
  const error = await call(memories, "BatchUpsertMemories", {
    project_id: project,
    records: [{ importance: 2 }, { memory_type: "x" }],
  }).then(
    () => assert.fail("an invalid batch was accepted"),
    (e) => e,
  );
  assert.equal(error.code, grpc.status.INVALID_ARGUMENT);
  const [bytes] = error.metadata.get("grpc-status-details-bin");
  const root = statusTypes();
  const status = root.lookupType("google.rpc.Status").decode(bytes);
  const byType = Object.fromEntries(
    status.details.map((any) => {
      const name = any.type_url.split("/").pop();
      return [name, root.lookupType(name).decode(any.value)];
    }),
  );
  assert.equal(status.code, grpc.status.INVALID_ARGUMENT);
  assert.equal(byType["google.rpc.ErrorInfo"].reason, "INVALID_ARGUMENT");
  const fields = byType["google.rpc.BadRequest"].field_violations.map((v) => v.field);
  assert.deepEqual(fields, ["records[0].importance", "records[1].memory_type"]);
  report("rich_error", { code: status.code, message: status.message, fields });
}

async function reflection(version) {
  const dir = path.dirname(createRequire(import.meta.url).resolve("@grpc/reflection/package.json"));
  const file = path.join(dir, "build", "proto", "grpc", "reflection", version, "reflection.proto");
  const loaded = grpc.loadPackageDefinition(protoLoader.loadSync(file, loaderOptions));
  const Service = loaded.grpc.reflection[version].ServerReflection;
  const stream = new Service(target, credentials).ServerReflectionInfo();
  const reply = await new Promise((resolve, reject) => {
    stream.on("data", resolve);
    stream.on("error", reject);
    stream.write({ list_services: "" });
  });
  stream.end();
  const names = reply.list_services_response.service.map((s) => s.name);
  assert.ok(names.includes("zerodb.v1.MemoryService"), names.join(", "));
  assert.ok(names.includes(`grpc.reflection.${version}.ServerReflection`), names.join(", "));
  report(`reflection_${version}`, { services: names.length });
}

try {
  await unaryUpsert();
  await streamedLoad();
  await subscription();
  await richError();
  await reflection("v1");
  await reflection("v1alpha");
} catch (error) {
  console.error(error);
  process.exitCode = 1;
} finally {
  memories.close();
  events.close();
}
