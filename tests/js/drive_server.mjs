// Drives `bookocr serve` over stdio with the official TypeScript MCP SDK: lists the tools, calls each one
// with the arguments the test gives, and checks every result's structuredContent against the tool's
// outputSchema. Prints one JSON report on stdout.
// usage: node drive_server.mjs '{"command": "...", "args": [...], "calls": {"tool": {...args}}}'
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import AjvModule from "ajv";

const Ajv = AjvModule.default ?? AjvModule;
const plan = JSON.parse(process.argv[2]);
const transport = new StdioClientTransport({ command: plan.command, args: plan.args, stderr: "ignore" });
const client = new Client({ name: "bookocr-ts-test", version: "1.0.0" });
await client.connect(transport);

const report = { server: client.getServerVersion(), tools: [], calls: {} };
const { tools } = await client.listTools();
const ajv = new Ajv({ strict: false, allErrors: true });
for (const tool of tools) {
  report.tools.push(tool.name);
  const args = plan.calls[tool.name];
  if (args === undefined) continue;
  const entry = { isError: false, schemaErrors: null, hasStructured: false, text: "" };
  try {
    const result = await client.callTool({ name: tool.name, arguments: args });
    entry.isError = Boolean(result.isError);
    entry.text = (result.content ?? []).filter((c) => c.type === "text").map((c) => c.text).join("\n");
    entry.hasStructured = result.structuredContent !== undefined;
    if (tool.outputSchema && !entry.isError) {
      const validate = ajv.compile(tool.outputSchema);
      entry.schemaErrors = validate(result.structuredContent) ? [] : validate.errors;
    }
  } catch (error) {
    entry.isError = true;
    entry.text = String(error);
  }
  report.calls[tool.name] = entry;
}
await client.close();
console.log(JSON.stringify(report));
