// A stateless MCP server of the official TypeScript SDK (McpServer over
// StreamableHTTPServerTransport, which reads the body itself, JSON answers)
// with two tools: echo and delete_notes. Each run of a tool prints
// "ran <tool> <text>" on stdout and answers the same, <text> being the
// text argument the tool got as JSON, percent-encoded
// (encodeURIComponent), so a test can tell what the server executed. The
// resources file:///public/a and file:///secret/a answer "served public"
// and "served secret", the prompts greet and admin_prompt "prompted <name>".
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
    s.registerTool(name, { inputSchema: { text: z.string().optional() } }, async (args) => {
      const ran = 'ran ' + name + ' ' + encodeURIComponent(JSON.stringify(args.text ?? null));
      console.log(ran);
      return { content: [{ type: 'text', text: ran }] };
    });
  }
  // A resource and a prompt each that a caller may and may not get,
  // answering "served <name>" and "prompted <name>".
  for (const name of ['public', 'secret']) {
    s.registerResource(name, 'file:///' + name + '/a', {}, async (uri) => ({ contents: [{ uri: uri.href, text: 'served ' + name }] }));
  }
  for (const name of ['greet', 'admin_prompt']) {
    s.registerPrompt(name, {}, async () => ({ messages: [{ role: 'user', content: { type: 'text', text: 'prompted ' + name } }] }));
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
