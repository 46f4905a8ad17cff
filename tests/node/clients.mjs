// Runs openai-node's structured-output helpers against the proxy at PROXY_URL and prints what they parsed, one JSON
// object per line: {"case": ..., "parsed": ...} or {"case": ..., "error": ...}.
import OpenAI from "openai";
import { zodFunction, zodResponseFormat } from "openai/helpers/zod";
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
};
for (const name of process.argv.slice(2)) {
  try {
    console.log(JSON.stringify({ case: name, parsed: await cases[name]() }));
  } catch (error) {
    console.log(JSON.stringify({ case: name, error: String(error) }));
  }
}
