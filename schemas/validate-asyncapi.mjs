// Validate an AsyncAPI document with @asyncapi/parser (refs to the JSON Schemas resolved).
// Prints every diagnostic; exits 1 when any has error severity, so CI fails on a broken contract.
// Usage: node schemas/validate-asyncapi.mjs schemas/asyncapi.yaml
import { resolve } from 'node:path';
import { DiagnosticSeverity, Parser, fromFile } from '@asyncapi/parser';

const path = resolve(process.argv[2] ?? 'schemas/asyncapi.yaml');
const names = Object.fromEntries(Object.entries(DiagnosticSeverity).map(([k, v]) => [v, k]));

try {
  const { document, diagnostics } = await fromFile(new Parser(), path).parse();
  for (const d of diagnostics) {
    const where = d.path?.length ? d.path.join('.') : '(document)';
    console.log(`${names[d.severity] ?? d.severity}\t${d.code}\t${where}\t${d.message}`);
  }
  const errors = diagnostics.filter((d) => d.severity === DiagnosticSeverity.Error);
  console.log(`${path}: ${diagnostics.length} diagnostic(s), ${errors.length} error(s)`);
  process.exit(errors.length > 0 || document === undefined ? 1 : 0);
} catch (err) {
  console.error(`${path}: ${err?.stack ?? err}`);
  process.exit(1);
}
