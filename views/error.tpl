<h1>{{status}}</h1>
<p>{{message}}</p>
<p><a href="/">Back to the form</a></p>
