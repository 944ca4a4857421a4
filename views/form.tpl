% rebase("base.tpl", title=title)
% def error_for(name):
%   return f' aria-invalid="true" aria-describedby="{name}-error"' if name in errors else ""
% end
<h1>{{heading}}</h1>
<form method="post" action="/">
  <p>
    <label for="age">Age</label>
    <input type="text" id="age" name="age" value="{{values['age']}}" inputmode="numeric" autocomplete="off"{{!error_for("age")}}>
    % if "age" in errors:
    <span class="error" id="age-error">{{errors["age"]}}</span>
    % end
  </p>
  <fieldset{{!' aria-describedby="hobbies-error"' if "hobbies" in errors else ""}}>
    <legend>Hobbies</legend>
    % if "hobbies" in errors:
    <p class="error" id="hobbies-error">{{errors["hobbies"]}}</p>
    % end
    % for value, label in hobbies.items():
    <label><input type="checkbox" name="hobbies" value="{{value}}" {{"checked" if value in values["hobbies"] else ""}}> {{label}}</label>
    % end
  </fieldset>
  <p><button type="submit">Submit</button></p>
</form>
% if not errors:
<section aria-labelledby="result-title">
  <h2 id="result-title">Result</h2>
  <p id="result">Age: {{values["age"] or "Empty"}}<br>
  Hobbies: {{", ".join(hobbies[value] for value in values["hobbies"]) or "No Hobbies?"}}</p>
</section>
% end
