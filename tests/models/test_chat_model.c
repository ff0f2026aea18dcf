/*
 * test_chat_model.c — the default model's own chat template, read from its GGUF through the models layer, is
 * recognised and renders SmolLM2's default system prompt. Needs the model the setup step fetches.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "gguf.h"
#include "sl_util.h"
#include "testutil.h"

Test(chat_model, default_model_template_renders_its_system_prompt) {
    char *path = sl_test_default_model_path();
    sl_gguf *g = NULL;
    cr_assert_eq(sl_gguf_open(path, &g), SL_OK, "%s: %s (the setup step fetches the default model)", path,
                 sl_last_error());
    sl_gguf_str s;
    cr_assert_eq(sl_gguf_get_str(g, "tokenizer.chat_template", &s), SL_OK);
    char *src = sl__strndup(s.data, (size_t)s.len);
    sl_chat_template *t = NULL;
    cr_assert_eq(sl_chat_template_create(src, NULL, "<|im_start|>", "<|im_end|>", &t), SL_OK, "%s", sl_last_error());
    cr_assert_str_eq(sl_chat_template_name(t), "smollm");
    sl_chat_message m = {"user", "Hi"};
    char *out = NULL;
    cr_assert_eq(sl_chat_render(t, &m, 1, 1, &out), SL_OK);
    cr_assert_str_eq(out, "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
                          "Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
    sl_free(out);
    sl_chat_template_free(t);
    free(src);
    sl_gguf_close(g);
    free(path);
}
