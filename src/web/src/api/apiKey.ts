/**
 * The server's API key as the page uses it: sent as `Authorization: Bearer KEY` on GET /v1/models
 * and as `api_key` in every new_request. The server answers 401 / an error frame with the codes
 * below when a key is needed and none (or a wrong one) was given.
 */
export type ApiKeyProblem = "missing" | "invalid";

/** The id of the settings' API key field (error messages offer to focus it). */
export const API_KEY_INPUT_ID = "api-key";

/** The key as sent: surrounding white space (a pasted newline) is not part of it. */
export function keyToSend(key: string): string {
  return key.trim();
}

/** What an error code says about the key; null when the error is about something else. */
export function apiKeyProblem(code: string | null | undefined): ApiKeyProblem | null {
  if (code === "missing_api_key") return "missing";
  if (code === "invalid_api_key") return "invalid";
  return null;
}

/**
 * The message the writer sees: what is wrong and where the key goes ("settings" under the
 * suggestions, "below" next to the key field itself).
 */
export function apiKeyMessage(problem: ApiKeyProblem, where: "settings" | "below" = "settings"): string {
  const place = where === "below" ? "below" : "in the settings";
  return problem === "missing"
    ? `This server needs an API key: enter it ${place}.`
    : `The server did not accept this API key: check it ${place}.`;
}

/** Moves the focus to the settings' API key field (when the page has one). */
export function focusApiKeyInput(): void {
  document.getElementById(API_KEY_INPUT_ID)?.focus();
}
