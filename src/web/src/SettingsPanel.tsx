import { API_KEY_INPUT_ID, type ApiKeyProblem } from "./api/apiKey";
import type { ModelChoice } from "./api/models";
import type { Settings } from "./settings";

interface Props {
  settings: Settings;
  models: ModelChoice[];
  modelsError: string | null;
  /** GET /v1/models was refused for want of a (valid) key: modelsError says so next to the key field */
  keyProblem?: ApiKeyProblem | null;
  onChange(next: Settings): void;
}

interface NumberField {
  key: "length" | "temperature" | "topK" | "topP" | "batchSize";
  label: string;
  min: number;
  max: number;
  step: number;
}

const FIELDS: NumberField[] = [
  { key: "length", label: "Length (tokens)", min: 1, max: 256, step: 1 },
  { key: "temperature", label: "Temperature", min: 0.1, max: 1, step: 0.05 },
  { key: "topK", label: "Top k (0 = off)", min: 0, max: 40, step: 1 },
  { key: "topP", label: "Top p (0 = off)", min: 0, max: 1, step: 0.05 },
  { key: "batchSize", label: "Number of suggestions", min: 1, max: 10, step: 1 },
];

export function SettingsPanel({ settings, models, modelsError, keyProblem = null, onChange }: Props) {
  const current = models.find((m) => m.name === settings.model);
  return (
    <form className="settings" onSubmit={(e) => e.preventDefault()} aria-label="Settings">
      <label>
        Model
        <select
          data-testid="model-picker"
          value={settings.model}
          onChange={(e) => onChange({ ...settings, model: e.target.value })}
        >
          <option value="">Server default</option>
          {models.map((m) => (
            <option key={m.name} value={m.name} disabled={!m.ready}>
              {m.label}
              {m.ready ? "" : " (loading)"}
            </option>
          ))}
        </select>
      </label>
      {modelsError && !keyProblem && <p role="alert" className="settings-error">{modelsError}</p>}
      {current?.notice && <p className="model-notice">{current.notice}</p>}
      {FIELDS.map((f) => (
        <label key={f.key}>
          {f.label}
          <input
            type="number"
            min={f.min}
            max={f.max}
            step={f.step}
            value={settings[f.key]}
            onChange={(e) => {
              const v = e.target.valueAsNumber;
              if (Number.isFinite(v)) onChange({ ...settings, [f.key]: Math.min(f.max, Math.max(f.min, v)) });
            }}
          />
        </label>
      ))}
      <label>
        Seed (empty = server default)
        <input
          type="number"
          min={0}
          step={1}
          value={settings.seed ?? ""}
          onChange={(e) => {
            const v = e.target.valueAsNumber;
            onChange({ ...settings, seed: Number.isFinite(v) && v >= 0 ? Math.floor(v) : null });
          }}
        />
      </label>
      {modelsError && keyProblem && (
        <p role="alert" className="settings-error" id="api-key-error" data-testid="api-key-error">{modelsError}</p>
      )}
      <label>
        API key (when the server needs one)
        <input
          id={API_KEY_INPUT_ID}
          type="password"
          autoComplete="off"
          spellCheck={false}
          value={settings.apiKey}
          aria-invalid={keyProblem ? true : undefined}
          aria-describedby={modelsError && keyProblem ? "api-key-error" : undefined}
          onChange={(e) => onChange({ ...settings, apiKey: e.target.value })}
        />
      </label>
    </form>
  );
}
