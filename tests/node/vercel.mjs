// Runs the Vercel AI SDK (`ai` with `@ai-sdk/openai`) against the proxy at PROXY_URL: `generateText` and
// `streamText` through the Responses API (`openai(model)`, the provider's default) and chat completions
// (`openai.chat(model)`). Prints one JSON object per line: {"case": ..., "parsed": ...} or {"case": ..., "error": ...}.
import { createOpenAI } from "@ai-sdk/openai";
import { generateText, streamText } from "ai";

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
const cases = {
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
