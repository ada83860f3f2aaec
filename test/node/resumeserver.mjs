// An MCP server of the official TypeScript SDK (McpServer over
// StreamableHTTPServerTransport, a session each, event-stream answers)
// with resumability: its InMemoryEventStore (the SDK's example store)
// keeps every event, and a GET with Last-Event-ID replays the events after
// it. The SDK's EventStore interface is not told the session: the
// transport hands the store the event id alone. By default one store
// serves every session, as a store kept elsewhere (a database) would;
// with --per-session each session gets a store of its own, as the SDK's
// examples make it. The tool echo answers "echo <text>".
//
//   node resumeserver.mjs --port N [--per-session]
//
// Serves MCP on every path; prints "listening" once ready.
import http from 'node:http';
import { randomUUID } from 'node:crypto';
import { parseArgs } from 'node:util';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { InMemoryEventStore } from '@modelcontextprotocol/sdk/examples/shared/inMemoryEventStore.js';
import { z } from 'zod';

const { values: args } = parseArgs({ options: { port: { type: 'string' }, 'per-session': { type: 'boolean' } } });

const shared = new InMemoryEventStore();
const sessions = new Map();

function server() {
  const s = new McpServer({ name: 'resumeserver', version: '1.0.0' });
  s.registerTool('echo', { inputSchema: { text: z.string().optional() } }, async ({ text }) => ({ content: [{ type: 'text', text: 'echo ' + text }] }));
  return s;
}

http.createServer(async (req, res) => {
  const id = req.headers['mcp-session-id'];
  let transport = id && sessions.get(id);
  if (!transport) {
    if (id) {
      res.writeHead(404, { 'Content-Type': 'application/json' }).end('{"jsonrpc":"2.0","error":{"code":-32001,"message":"Session not found"},"id":null}');
      return;
    }
    transport = new StreamableHTTPServerTransport({
      sessionIdGenerator: () => randomUUID(),
      eventStore: args['per-session'] ? new InMemoryEventStore() : shared,
      onsessioninitialized: sid => sessions.set(sid, transport),
    });
    await server().connect(transport);
  }
  await transport.handleRequest(req, res);
}).listen(Number(args.port), '127.0.0.1', () => console.log('listening'));
