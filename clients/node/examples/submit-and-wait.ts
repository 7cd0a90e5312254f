// A caller: submit one Talent Mapping assessment and print its persona profile.
//
// ASSAY_ASSESSMENT_ADDR=… ASSAY_NOTIFIER_ADDR=… ASSAY_TOKEN=… node dist/examples/submit-and-wait.js
import type { DescMessage } from "@bufbuild/protobuf";
import { AssayClient } from "@assay/client";
import { OceanSchema, RiasecSchema, ViaIsSchema } from "@assay/client/gen/assay/common/v1/assessment_pb.js";

/** Every score of a RIASEC, OCEAN or VIA message set to one value (each 0–100). */
function scores(schema: DescMessage, value: number): Record<string, number> {
  return Object.fromEntries(schema.fields.map((field) => [field.localName, value]));
}

await using assay = new AssayClient({
  assessmentAddr: process.env.ASSAY_ASSESSMENT_ADDR ?? "",
  notifierAddr: process.env.ASSAY_NOTIFIER_ADDR ?? "",
  token: process.env.ASSAY_TOKEN ?? "", // or { file: path } (re-read when it changes), or a function
});
const data = { riasec: scores(RiasecSchema, 70), ocean: scores(OceanSchema, 60), viaIs: scores(ViaIsSchema, 55) };
const reply = await assay.submit(data); // a request id is made: retries charge once
const { job, result } = await assay.wait(reply.job?.jobId ?? "");
console.log(job.jobId, job.status, result ? result.testResult?.archetype : job.errorCode);
