/*
 * test_chat_api.c — what an operator and a client see of models/chat.c beyond the jinja2 fixtures: names and
 * overrides, refusals with messages that say what to do, tolerance of reformatted sources, the default system
 * prompt taken from the source, and allocation failures turned into statuses.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "chat.h"
#include "sl_util.h"

/* SmolLM2-135M-Instruct's tokenizer.chat_template, as in its GGUF. */
static const char SMOLLM_SRC[] =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>'"
    " + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt"
    " %}{{ '<|im_start|>assistant\n' }}{% endif %}";

static char *render1(const sl_chat_template *t, const char *role, const char *content, int add_gen) {
    sl_chat_message m = {role, content};
    char *out = NULL;
    cr_assert_eq(sl_chat_render(t, &m, 1, add_gen, &out), SL_OK, "%s", sl_last_error());
    return out;
}

Test(chat_api, every_listed_name_is_an_override) {
    size_t n = 0;
    const char *const *names = sl_chat_template_names(&n);
    cr_assert_geq(n, 4);
    const char *must[] = {"chatml", "llama3", "mistral", "smollm"};
    for (size_t k = 0; k < SL_ARRAY_LEN(must); k++) {
        int found = 0;
        for (size_t i = 0; i < n; i++) found |= strcmp(names[i], must[k]) == 0;
        cr_assert(found, "%s missing from the names", must[k]);
    }
    for (size_t i = 0; i < n; i++) {
        sl_chat_template *t = NULL;
        cr_assert_eq(sl_chat_template_create(NULL, names[i], "<s>", "</s>", &t), SL_OK, "%s", sl_last_error());
        cr_assert_str_eq(sl_chat_template_name(t), names[i]);
        char *out = render1(t, "user", "hi", 1);
        cr_assert(strstr(out, "hi") != NULL);
        sl_free(out);
        sl_chat_template_free(t);
    }
}

Test(chat_api, unknown_role_is_refused_by_name) {
    sl_chat_template *t = NULL;
    cr_assert_eq(sl_chat_template_create(SMOLLM_SRC, NULL, NULL, NULL, &t), SL_OK);
    sl_chat_message msgs[] = {{"user", "hi"}, {"tool", "{\"x\": 1}"}};
    char *out = (char *)1;
    cr_assert_eq(sl_chat_render(t, msgs, 2, 1, &out), SL_INVALID_ARGUMENT);
    cr_assert_null(out);
    cr_assert(strstr(sl_last_error(), "'tool'"), "message: %s", sl_last_error());
    sl_chat_message no_role = {NULL, "x"};
    cr_assert_eq(sl_chat_render(t, &no_role, 1, 1, &out), SL_INVALID_ARGUMENT);
    sl_chat_template_free(t);
}

Test(chat_api, unrecognised_source_asks_for_an_override) {
    sl_chat_template *t = (sl_chat_template *)1;
    /* Zephyr-style: nothing Sluice renders. */
    const char *zephyr = "{% for message in messages %}{{ '<|' + message['role'] + '|>\n' + message['content'] + "
                         "eos_token }}{% endfor %}";
    cr_assert_eq(sl_chat_template_create(zephyr, NULL, "<s>", "</s>", &t), SL_UNSUPPORTED);
    cr_assert_null(t);
    cr_assert(strstr(sl_last_error(), "unrecognised chat template"), "message: %s", sl_last_error());
    cr_assert(strstr(sl_last_error(), "--chat-template"), "message: %s", sl_last_error());
    cr_assert(strstr(sl_last_error(), "chatml") && strstr(sl_last_error(), "llama3"));

    /* Llama-3-looking but with behaviour we do not render (3.1's knowledge-date system block): refused with a
     * hint naming the family, rather than rendered approximately. */
    const char *llama31ish = "{{- bos_token }}{{- '<|start_header_id|>system<|end_header_id|>\n\n' }}{{- 'Cutting "
                             "Knowledge Date: December 2023\n' }}{% for message in messages %}{{ "
                             "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + "
                             "message['content'] | trim + '<|eot_id|>' }}{% endfor %}";
    cr_assert_eq(sl_chat_template_create(llama31ish, NULL, NULL, NULL, &t), SL_UNSUPPORTED);
    cr_assert(strstr(sl_last_error(), "looks like llama3"), "message: %s", sl_last_error());

    /* ChatML written with text outside its tags: we cannot vouch for what the text does. */
    const char *texty = "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] "
                        "}}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
    cr_assert_eq(sl_chat_template_create(texty, NULL, NULL, NULL, &t), SL_UNSUPPORTED);
    cr_assert(strstr(sl_last_error(), "outside its tags"), "message: %s", sl_last_error());

    cr_assert_eq(sl_chat_template_create(NULL, NULL, NULL, NULL, &t), SL_UNSUPPORTED);
    cr_assert(strstr(sl_last_error(), "--chat-template"), "message: %s", sl_last_error());
    cr_assert_eq(sl_chat_template_create("", NULL, NULL, NULL, &t), SL_UNSUPPORTED);
    cr_assert_eq(sl_chat_template_create("{{ unterminated", NULL, NULL, NULL, &t), SL_UNSUPPORTED);
    cr_assert_eq(sl_chat_template_create("{{ 'open }}", NULL, NULL, NULL, &t), SL_UNSUPPORTED);
}

Test(chat_api, unknown_override_is_refused) {
    sl_chat_template *t = (sl_chat_template *)1;
    cr_assert_eq(sl_chat_template_create(SMOLLM_SRC, "vicuna", NULL, NULL, &t), SL_INVALID_ARGUMENT);
    cr_assert_null(t);
    cr_assert(strstr(sl_last_error(), "vicuna") && strstr(sl_last_error(), "chatml"), "%s", sl_last_error());
}

Test(chat_api, override_wins_over_the_source) {
    sl_chat_template *t = NULL;
    cr_assert_eq(sl_chat_template_create(SMOLLM_SRC, "chatml", NULL, NULL, &t), SL_OK);
    cr_assert_str_eq(sl_chat_template_name(t), "chatml");
    char *out = render1(t, "user", "Hi", 1);
    cr_assert_str_eq(out, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"); /* no default system */
    sl_free(out);
    sl_chat_template_free(t);

    cr_assert_eq(sl_chat_template_create(SMOLLM_SRC, "llama3", "<|begin_of_text|>", "<|eot_id|>", &t), SL_OK);
    out = render1(t, "user", "  Hi  ", 0);
    cr_assert_str_eq(out, "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>");
    sl_free(out);
    sl_chat_template_free(t);
}

Test(chat_api, default_system_prompt_comes_from_the_source) {
    /* Qwen2-Instruct's template: SmolLM2's shape with another prompt. */
    const char *qwen2 = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ "
                        "'<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}{{"
                        "'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
                        "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
    sl_chat_template *t = NULL;
    cr_assert_eq(sl_chat_template_create(qwen2, NULL, NULL, NULL, &t), SL_OK, "%s", sl_last_error());
    cr_assert_str_eq(sl_chat_template_name(t), "smollm");
    char *out = render1(t, "user", "Hi", 1);
    cr_assert_str_eq(out, "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                          "<|im_start|>assistant\n");
    sl_free(out);
    /* A system message of the caller's replaces it. */
    sl_chat_message msgs[] = {{"system", "S"}, {"user", "U"}};
    cr_assert_eq(sl_chat_render(t, msgs, 2, 0, &out), SL_OK);
    cr_assert_str_eq(out, "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n");
    sl_free(out);
    sl_chat_template_free(t);

    /* The override keeps the source's prompt; with no source it is SmolLM2's. */
    cr_assert_eq(sl_chat_template_create(qwen2, "smollm", NULL, NULL, &t), SL_OK);
    out = render1(t, "user", "Hi", 0);
    cr_assert(strstr(out, "You are a helpful assistant.<|im_end|>"), "%s", out);
    sl_free(out);
    sl_chat_template_free(t);
    cr_assert_eq(sl_chat_template_create(NULL, "smollm", NULL, NULL, &t), SL_OK);
    out = render1(t, "user", "Hi", 0);
    cr_assert(strstr(out, "named SmolLM, trained by Hugging Face<|im_end|>"), "%s", out);
    sl_free(out);
    sl_chat_template_free(t);
}

Test(chat_api, reformatted_sources_are_recognised) {
    /* ChatML with whitespace control, double quotes, attribute access and one literal instead of two: the
     * same output under jinja2, so the same template. */
    const char *chatml = "{%- for message in messages -%}\n"
                         "    {{- \"<|im_start|>\" + message.role + \"\\n\" + message.content + \"<|im_end|>\\n\" -}}\n"
                         "{%- endfor -%}\n"
                         "{%- if add_generation_prompt -%}\n"
                         "    {{- \"<|im_start|>assistant\\n\" -}}\n"
                         "{%- endif -%}\n";
    sl_chat_template *t = NULL;
    cr_assert_eq(sl_chat_template_create(chatml, NULL, NULL, NULL, &t), SL_OK, "%s", sl_last_error());
    cr_assert_str_eq(sl_chat_template_name(t), "chatml");
    sl_chat_template_free(t);

    /* Without the dashes the newlines between tags would be printed: not the same template. */
    const char *leaky = "{% for message in messages %}\n\n{{ '<|im_start|>' + message['role'] + '\\n' + "
                        "message['content'] + '<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ "
                        "'<|im_start|>assistant\\n' }}{% endif %}";
    cr_assert_eq(sl_chat_template_create(leaky, NULL, NULL, NULL, &t), SL_UNSUPPORTED);
}

Test(chat_api, mistral_says_why_it_refuses) {
    sl_chat_template *t = NULL;
    cr_assert_eq(sl_chat_template_create(NULL, "mistral", "<s>", "</s>", &t), SL_OK);
    sl_chat_message twice[] = {{"user", "a"}, {"user", "b"}};
    char *out = NULL;
    cr_assert_eq(sl_chat_render(t, twice, 2, 1, &out), SL_INVALID_ARGUMENT);
    cr_assert(strstr(sl_last_error(), "alternate"), "message: %s", sl_last_error());
    sl_chat_message sys[] = {{"system", "s"}, {"user", "a"}};
    cr_assert_eq(sl_chat_render(t, sys, 2, 1, &out), SL_INVALID_ARGUMENT);
    cr_assert(strstr(sl_last_error(), "system"), "message: %s", sl_last_error());
    sl_chat_message ok[] = {{"user", "a"}, {"assistant", "b"}, {"user", "c"}};
    cr_assert_eq(sl_chat_render(t, ok, 3, 1, &out), SL_OK);
    cr_assert_str_eq(out, "<s>[INST] a [/INST]b</s>[INST] c [/INST]");
    sl_free(out);
    sl_chat_template_free(t);

    cr_assert_eq(sl_chat_template_create(NULL, "mistral-v1", "<s>", "</s>", &t), SL_OK);
    cr_assert_eq(sl_chat_render(t, sys, 2, 1, &out), SL_OK);
    cr_assert_str_eq(out, "<s> [INST] s\n\na [/INST]");
    sl_free(out);
    sl_chat_template_free(t);
}

Test(chat_api, allocation_failures_are_statuses) {
    sl_chat_message msgs[] = {{"user", "Hi"}, {"assistant", "Hello"}, {"user", "Bye"}};
    int succeeded = 0;
    for (long k = 0; k < 1000 && !succeeded; k++) {
        sl__alloc_fail_after(k);
        sl_chat_template *t = NULL;
        char *out = NULL;
        sl_status st = sl_chat_template_create(SMOLLM_SRC, NULL, "<s>", "</s>", &t);
        if (st == SL_OK) st = sl_chat_render(t, msgs, 3, 1, &out);
        sl__alloc_fail_after(-1);
        if (st == SL_OK) {
            cr_assert(strstr(out, "<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n"));
            succeeded = 1;
        } else {
            cr_assert_eq(st, SL_OUT_OF_MEMORY, "allocation %ld: %s (%s)", k, sl_status_name(st), sl_last_error());
            cr_assert_null(out);
        }
        sl_free(out);
        sl_chat_template_free(t);
    }
    cr_assert(succeeded);
}
