// The editor the lab's page uses, as one global (`CM`): CodeMirror 6 with YAML,
// completion and diagnostics. Bundled by build.mjs; the page loads nothing else.
export { EditorView, basicSetup } from "codemirror";
export { EditorState, StateEffect, StateField } from "@codemirror/state";
export { Decoration, keymap } from "@codemirror/view";
export { yaml } from "@codemirror/lang-yaml";
export { setDiagnostics, lintGutter } from "@codemirror/lint";
export { autocompletion } from "@codemirror/autocomplete";
