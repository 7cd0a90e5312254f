// A valid Talent Mapping assessment (every score set), and one with a score out of range.
import type { DescMessage, MessageInitShape } from "@bufbuild/protobuf";
import {
  type AssessmentDataSchema,
  OceanSchema,
  RiasecSchema,
  ViaIsSchema,
} from "@assay/client/gen/assay/common/v1/assessment_pb.js";

function scores(schema: DescMessage, value: number): Record<string, number> {
  return Object.fromEntries(schema.fields.map((field) => [field.localName, value]));
}

export function talentData(): MessageInitShape<typeof AssessmentDataSchema> {
  return { riasec: scores(RiasecSchema, 70), ocean: scores(OceanSchema, 60), viaIs: scores(ViaIsSchema, 55) };
}
