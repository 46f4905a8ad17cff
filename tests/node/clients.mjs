// Runs openai-node's structured-output helpers and its Responses API calls against the proxy at PROXY_URL and prints
// what they parsed, one JSON object per line: {"case": ..., "parsed": ...} or {"case": ..., "error": ...}.
import OpenAI from "openai";
import { zodFunction, zodResponseFormat, zodTextFormat } from "openai/helpers/zod";
import { z } from "zod";

const Order = z.object({
  customer: z.string().max(40).describe("Customer name"),
  items: z.array(z.object({ sku: z.string().min(3).max(12), quantity: z.number().int().min(1).max(99) })).min(1).max(10),
  discount: z.number().min(0).max(1).nullable(),
  express: z.boolean(),
});
const Lookup = z.object({ order_id: z.number().int(), fields: z.array(z.string()).max(3) });

const client = new OpenAI({ baseURL: `${process.env.PROXY_URL}/v1`, apiKey: "unused", maxRetries: 0 });
const model = "claude-sonnet-4-6";
const messages = [{ role: "user", content: "Order 2 AB-12 for Ada" }];
const cases = {
  parse: async () =>
    (await client.chat.completions.parse({ model, messages, response_format: zodResponseFormat(Order, "order") }))
      .choices[0].message.parsed,
  stream: async () => {
    const stream = client.chat.completions.stream({ model, messages, response_format: zodResponseFormat(Order, "order") });
    return (await stream.finalChatCompletion()).choices[0].message.parsed;
  },
  tool: async () =>
    (await client.chat.completions.parse({ model, messages, tools: [zodFunction({ name: "lookup", parameters: Lookup })] }))
      .choices[0].message.tool_calls[0].function.parsed_arguments,
  responses: async () => {
    const response = await client.responses.create({ model, input: "Say hello", instructions: "Be brief." });
    return { id: response.id, status: response.status, text: response.output_text, usage: response.usage.total_tokens };
  },
  responses_stream: async () => {
    const stream = client.responses.stream({ model, input: "Say hello" });
    const deltas = [];
    stream.on("response.output_text.delta", (event) => deltas.push(event.delta));
    const final = await stream.finalResponse();
    return { deltas: deltas.length, joined: deltas.join(""), text: final.output_text, status: final.status };
  },
  responses_parse: async () =>
    (await client.responses.parse({ model, input: messages[0].content, text: { format: zodTextFormat(Order, "order") } }))
      .output_parsed,
};
for (const name of process.argv.slice(2)) {
  try {
    console.log(JSON.stringify({ case: name, parsed: await cases[name]() }));
  } catch (error) {
    console.log(JSON.stringify({ case: name, error: String(error) }));
  }
}
