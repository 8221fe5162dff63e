// A client's story through TypeScript types generated from docs/openapi.json by
// openapi-typescript (generated/api.d.ts) and openapi-fetch, without hand edits:
// submit a job, follow it to the end, read its report, download the student.
//
//   node build/story.js BASE_URL API_KEY
//
// Prints one JSON line: the job id, its status, the student's size and test accuracy.
import createClient from "openapi-fetch";
import type { paths } from "./generated/api.js";

const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
const [baseUrl, key] = process.argv.slice(2);
const client = createClient<paths>({ baseUrl, headers: { Authorization: `Bearer ${key}` } });

const created = await client.POST("/v1/jobs", {
  body: {
    mode: "supervised",
    student: { architecture: "mlp_small" },
    dataset: { name: "digits" },
    training: { epochs: 2, batch_size: 64 },
  },
});
if (!created.data) throw new Error(`submit failed: ${JSON.stringify(created.error)}`);
let job = created.data;
while (!TERMINAL.has(job.status)) {
  await new Promise((resolve) => setTimeout(resolve, 500));
  const read = await client.GET("/v1/jobs/{job_id}", { params: { path: { job_id: job.id } } });
  if (!read.data) throw new Error(`read failed: ${JSON.stringify(read.error)}`);
  job = read.data;
}
const report = await client.GET("/v1/jobs/{job_id}/report", { params: { path: { job_id: job.id } } });
const student = await client.GET("/v1/jobs/{job_id}/artifacts/{name}", {
  params: { path: { job_id: job.id, name: "student.safetensors" } },
  parseAs: "arrayBuffer",
});
if (!student.data) throw new Error(`download failed: ${student.response.status}`);
console.log(JSON.stringify({
  job: job.id,
  status: job.status,
  bytes: student.data.byteLength,
  test_accuracy: report.data?.test_accuracy ?? null,
}));
