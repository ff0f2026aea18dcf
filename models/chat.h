/*
 * chat.h — chat templates: turning a list of {role, content} messages into the prompt text a model was
 * trained on.
 *
 * Models ship their template as Jinja source (GGUF key tokenizer.chat_template). Sluice does not embed a
 * Jinja interpreter: it recognises the handful of template families that matter by their content (markers
 * such as "<|im_start|>", "<|start_header_id|>", "[INST]", plus the details that change the output, like a
 * trailing space after EOS or a default system prompt) and renders them natively. The contract is exactness:
 * for every source it accepts, the rendering equals what jinja2 produces from that source with Hugging Face's
 * settings (tests/gen_chat_fixtures.py checks this byte for byte). A source it cannot vouch for is refused
 * with a message asking for --chat-template, rather than rendered approximately.
 *
 * Known names (sl_chat_template_names):
 *   chatml        <|im_start|>role\ncontent<|im_end|>\n per message (OpenHermes and many others)
 *   smollm        ChatML that inserts a default system prompt when the first message is not a system message
 *                 (SmolLM2-Instruct, the default model; Qwen2 has the same shape); the prompt text is taken
 *                 from the template source when one is given
 *   llama3        <|start_header_id|>role<|end_header_id|>\n\ncontent<|eot_id|>, BOS first, content trimmed
 *   mistral       [INST] user [/INST]answer</s> (Mistral-7B-Instruct-v0.2's original template; no system role,
 *                 roles must alternate user/assistant)
 *   mistral-v0.1  the same with a space after each </s> (Mistral-7B-Instruct-v0.1's original template)
 *   mistral-v1    " [INST] user [/INST] answer</s>", an optional leading system message folded into the
 *                 first user turn (the later revision of both v0.1 and v0.2)
 */
#ifndef SL_CHAT_H
#define SL_CHAT_H

#include <stddef.h>

#include "sluice/sluice.h"

typedef struct sl_chat_template sl_chat_template;

/* jinja_src: the GGUF's tokenizer.chat_template (may be NULL); override_name: a name given by the operator
 * (--chat-template) or NULL; bos_text/eos_text: the tokenizer's BOS/EOS text (may be NULL, rendered as "").
 * The override wins over the source (for "smollm" the source still supplies the default system prompt when it
 * has one). Unrecognised source and no override -> SL_UNSUPPORTED; unknown override name ->
 * SL_INVALID_ARGUMENT. On failure *out is NULL. */
sl_status sl_chat_template_create(const char *jinja_src, const char *override_name, const char *bos_text,
                                  const char *eos_text, sl_chat_template **out);
void sl_chat_template_free(sl_chat_template *t);
/* One of sl_chat_template_names(). */
const char *sl_chat_template_name(const sl_chat_template *t);
/* The known names, for --help; *n receives their count. Static storage. */
const char *const *sl_chat_template_names(size_t *n);

/* Renders msgs[0..n) (role "system", "user" or "assistant"; NULL content renders as "") and, when
 * add_generation_prompt is set and the template has one, the header that opens the assistant's answer.
 * Other roles -> SL_INVALID_ARGUMENT naming the role; so is what the template itself refuses (mistral:
 * roles must alternate user/assistant; no system role in the original templates). *out is a NUL-terminated
 * string from sl__malloc (release with sl_free), NULL on failure. */
sl_status sl_chat_render(const sl_chat_template *t, const sl_chat_message *msgs, size_t n,
                         int add_generation_prompt, char **out);

#endif /* SL_CHAT_H */
