// An MCP server of the official TypeScript SDK (McpServer over
// StreamableHTTPServerTransport, sessions) whose resources/list waits for
// a tools/call to arrive, and whose tools/call waits for the list to be
// answered: a caller that sends the call with the id of its pending
// resources/list gets the list as the call's answer, since the transport
// sends an answer to the POST that carried its id last.
//
//   node listserver.mjs --port N [--json]
//
// Serves MCP on every path; prints "listening" once ready, "listing"
// when a resources/list is pending.
import http from 'node:http';
import { randomUUID } from 'node:crypto';
import { parseArgs } from 'node:util';
import { McpServer, ResourceTemplate } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';

const { values: args } = parseArgs({ options: { port: { type: 'string' }, json: { type: 'boolean' } } });

const server = new McpServer({ name: 'listserver', version: '1.0.0' });
let called;
const toolCalled = new Promise(resolve => { called = resolve; });
let listed;
const listAnswered = new Promise(resolve => { listed = resolve; });
const sleep = ms => new Promise(resolve => setTimeout(resolve, ms));

server.registerResource('files', new ResourceTemplate('test://files/{name}', {
  list: async () => {
    console.log('listing');
    await Promise.race([toolCalled, sleep(5000)]);
    setTimeout(listed, 100);
    return { resources: [{ uri: 'test://files/hidden-plan', name: 'hidden-plan' }] };
  },
}), {}, async uri => ({ contents: [{ uri: uri.href, text: 'x' }] }));
server.registerTool('echo', { description: 'Echoes.' }, async () => {
  called();
  await Promise.race([listAnswered, sleep(5000)]);
  return { content: [{ type: 'text', text: 'echoed' }] };
});

const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: () => randomUUID(), enableJsonResponse: !!args.json });
await server.connect(transport);
http.createServer(async (req, res) => {
  let body = '';
  for await (const chunk of req) body += chunk;
  await transport.handleRequest(req, res, body ? JSON.parse(body) : undefined);
}).listen(Number(args.port), '127.0.0.1', () => console.log('listening'));
