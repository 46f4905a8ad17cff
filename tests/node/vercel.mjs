// Runs the Vercel AI SDK (`ai` with `@ai-sdk/openai`) against the proxy at PROXY_URL: `generateText`, `streamText`,
// `generateObject` and `streamObject` with a zod schema, and a multi-step tool loop (tools with `execute`,
// `stopWhen: stepCountIs(3)`), through the Responses API (`openai(model)`, the provider's default) and chat
// completions (`openai.chat(model)`). Prints one JSON object per line: {"case": ..., "parsed": ...} or
// {"case": ..., "error": ...}.
import { createOpenAI } from "@ai-sdk/openai";
import { generateObject, generateText, stepCountIs, streamObject, streamText, tool } from "ai";
import { z } from "zod";

const openai = createOpenAI({ baseURL: `${process.env.PROXY_URL}/v1`, apiKey: "unused" });
const model = "claude-sonnet-4-6";
const streamed = async (languageModel) => {
  const result = streamText({ model: languageModel, prompt: "Say hello", maxRetries: 0 });
  const parts = [];
  for await (const part of result.textStream) parts.push(part);
  return { parts: parts.length, text: parts.join(""), finish: await result.finishReason };
};
const generated = async (languageModel) => {
  const result = await generateText({ model: languageModel, prompt: "Say hello", maxRetries: 0 });
  return { text: result.text, finish: result.finishReason, tokens: result.usage.totalTokens };
};
const Order = z.object({
  customer: z.string().max(40).describe("Customer name"),
  items: z.array(z.object({ sku: z.string().min(3).max(12), quantity: z.number().int().min(1).max(99) })).min(1).max(10),
  discount: z.number().min(0).max(1).nullable(),
  express: z.boolean(),
});
const prompt = "Order 2 AB-12 for Ada";
const object = async (languageModel) =>
  (await generateObject({ model: languageModel, schema: Order, schemaName: "order", prompt, maxRetries: 0 })).object;
const streamedObject = async (languageModel) => {
  const result = streamObject({ model: languageModel, schema: Order, schemaName: "order", prompt, maxRetries: 0 });
  let partials = 0;
  for await (const _ of result.partialObjectStream) partials += 1;
  return { partials, object: await result.object };
};
// The tool's result is computed from its input, so the test can tell it ran with the arguments the model sent.
const calls = [];
const tools = {
  lookup: tool({
    description: "Look up an order's status",
    inputSchema: z.object({ order_id: z.number().int().min(1) }),
    execute: async ({ order_id }) => {
      calls.push(order_id);
      return { order_id, status: `shipped-${order_id * 3}` };
    },
  }),
};
const loop = { tools, stopWhen: stepCountIs(3), prompt: "Where is order 7?", maxRetries: 0 };
const toolLoop = async (languageModel, extra = {}) => {
  calls.length = 0;
  const result = await generateText({ model: languageModel, ...loop, ...extra });
  return { text: result.text, steps: result.steps.length, calls: [...calls], finish: result.finishReason };
};
const streamedToolLoop = async (languageModel) => {
  calls.length = 0;
  const result = streamText({ model: languageModel, ...loop });
  const parts = [];
  for await (const part of result.textStream) parts.push(part);
  return { text: parts.join(""), steps: (await result.steps).length, calls: [...calls], finish: await result.finishReason };
};
const cases = {
  responses_object: () => object(openai(model)),
  responses_stream_object: () => streamedObject(openai(model)),
  chat_object: () => object(openai.chat(model)),
  chat_stream_object: () => streamedObject(openai.chat(model)),
  responses_tools: () => toolLoop(openai(model)),
  responses_stream_tools: () => streamedToolLoop(openai(model)),
  // A step with text before its tool call: with `store` on (the default) the provider sends that text back as an
  // `item_reference` to the item id the proxy gave it (the proxy keeps its output items to resolve it); with
  // `store: false` it sends the text itself.
  responses_tools_preamble: () => toolLoop(openai(model)),
  responses_stream_tools_preamble: () => streamedToolLoop(openai(model)),
  responses_tools_preamble_unstored: () => toolLoop(openai(model), { providerOptions: { openai: { store: false } } }),
  chat_tools_capped: () => toolLoop(openai.chat(model)),
  responses_stream_tools_capped: () => streamedToolLoop(openai(model)),
  chat_tools: () => toolLoop(openai.chat(model)),
  chat_stream_tools: () => streamedToolLoop(openai.chat(model)),
  responses_text: () => generated(openai(model)),
  responses_stream: () => streamed(openai(model)),
  chat_text: () => generated(openai.chat(model)),
  chat_stream: () => streamed(openai.chat(model)),
};
for (const name of process.argv.slice(2)) {
  try {
    console.log(JSON.stringify({ case: name, parsed: await cases[name]() }));
  } catch (error) {
    console.log(JSON.stringify({ case: name, error: String(error) }));
  }
}
