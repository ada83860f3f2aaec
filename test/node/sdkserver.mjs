// A stateless MCP server of the official TypeScript SDK (McpServer over
// StreamableHTTPServerTransport, which reads the body itself, JSON answers)
// with two tools: echo and delete_notes. Each run of a tool prints
// "ran <tool>" on stdout, so a test can tell what the server executed.
//
//   node sdkserver.mjs --port N [--express]
//
// With --express the transport sits in the SDK's own Express app
// (createMcpExpressApp), whose express.json() reads the body in the
// charset its Content-Type names and hands the transport the parsed body,
// as the SDK's examples deploy it.
//
// Serves MCP on every path; prints "listening" once ready.
import http from 'node:http';
import { parseArgs } from 'node:util';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { createMcpExpressApp } from '@modelcontextprotocol/sdk/server/express.js';
import { z } from 'zod';

const { values: args } = parseArgs({ options: { port: { type: 'string' }, express: { type: 'boolean' } } });

function server() {
  const s = new McpServer({ name: 'sdkserver', version: '1.0.0' });
  for (const name of ['echo', 'delete_notes']) {
    s.registerTool(name, { inputSchema: { text: z.string().optional() } }, async () => {
      console.log('ran ' + name);
      return { content: [{ type: 'text', text: 'ran ' + name }] };
    });
  }
  return s;
}

async function serve(req, res, parsedBody) {
  const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined, enableJsonResponse: true });
  await server().connect(transport);
  await transport.handleRequest(req, res, parsedBody);
}

const listening = () => console.log('listening');
if (args.express) {
  const app = createMcpExpressApp();
  app.use((req, res) => serve(req, res, req.body));
  app.listen(Number(args.port), '127.0.0.1', listening);
} else {
  http.createServer((req, res) => serve(req, res)).listen(Number(args.port), '127.0.0.1', listening);
}
